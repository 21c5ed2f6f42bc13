"""Dashboard test helpers: tasks to show, pages to read (CSRF tokens, rows), a tiny PNG."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from tests.support.factory import PROMPT, add_callbacks, make_task
from tracker.db import Database

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"  # the README's screenshots


def add_task(
    db: Database,
    prompt: str = PROMPT,
    *,
    state: str = "queued",
    source: str | None = None,
    events: list[Any] | None = None,
    **fields: Any,
) -> int:
    """A task in any state (tests/support/factory.py), an extend of `source` when given, with
    `events`: callback payloads recorded as the service records them."""
    task = make_task(db, state, user_prompt=prompt, source_task_id=source, **fields)
    add_callbacks(db, task.id, events or [])
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
