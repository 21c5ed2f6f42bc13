"""Dashboard test helpers: tasks to show, pages to read (CSRF tokens, rows), a tiny PNG."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from tracker.db import Database
from tracker.flows import validate
from tracker.tasks import store
from tracker.tasks.models import Task

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"  # the README's screenshots


def add_task(
    db: Database,
    prompt: str = "a quiet harbour at dawn",
    *,
    state: str = "queued",
    source: str | None = None,
    events: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> int:
    """A task in any state, its counters kept by store.set_state, as the service keeps them."""
    body: dict[str, Any] = {"user_prompt": prompt}
    if source:
        body["source_task_id"] = source
    task = store.create(db, validate.new_task(body))
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        before = row.state
        store.set_state(session, row, state)
        for name, value in fields.items():
            setattr(row, name, value)
        for payload in events or []:
            store.record(session, row, "callback", before=before, payload=payload)
    return task.id


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def row_ids(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-task-id="(\d+)"', page)]


def get(client: FlaskClient, path: str, **kwargs: Any) -> tuple[int, str]:
    response = client.get(path, headers={"Accept": "text/html"}, **kwargs)
    return response.status_code, response.get_data(as_text=True)
