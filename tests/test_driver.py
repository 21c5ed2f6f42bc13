"""The callback route's transaction on the driver's cursor (tracker/driver.py).

Every test runs on SQLite and on PostgreSQL (the `db` fixture), where statements are
prepared once a connection and travel in two round trips.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.support.sent import sent_task
from tracker import create_app, driver, events, ingest, lifecycle
from tracker.db import Database
from tracker.models import Task
from tracker.parse import Update
from tracker.states import Source

TOKEN = "driver-test-token-" + "y" * 30


def _processing(db: Database) -> int:
    return sent_task(db, TOKEN, "up-driver", "processing")


def _progress(db: Database, settings: Any, progress: int) -> bool | None:
    upd = Update(understood=True, state="processing", upstream_id="up-driver", progress=progress)
    return ingest.callback(db, settings, TOKEN, upd, {"progress": progress})


def test_a_failed_write_rolls_back_and_the_next_callbacks_still_go_through(
    db: Database, make_settings: Any
) -> None:
    """A write that fails (here: an event for a task that is not there) leaves nothing, and
    on PostgreSQL the statements it had prepared are forgotten and prepared again."""
    settings = make_settings()
    task_id = _processing(db)
    fresh = Database(db.url, lock_wait=2.0)  # a pool of its own: nothing prepared yet
    try:
        with pytest.raises(IntegrityError), driver.write(fresh) as tx:
            row = tx.first(ingest._BY_TOKEN, {"hash_": lifecycle.hash_token(TOKEN)})
            assert row is not None and row.id == task_id
            tx.execute(ingest._UPDATE_TASK, {"progress": 99, "id_": task_id})
            events.insert(tx, task_id + 1000, None, Source.CALLBACK, before=None, after=None)
        with db.read() as session:
            task = session.get(Task, task_id)
            assert task is not None and task.progress is None  # the UPDATE was rolled back
        for progress in (10, 20, 30):
            assert _progress(fresh, settings, progress) is False
    finally:
        fresh.dispose()
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.progress == 30
        stored = [json.loads(e.payload) for e in task.events if e.source == "callback"]
    assert stored == [{"progress": 10}, {"progress": 20}, {"progress": 30}]


def test_a_database_that_is_down_is_a_503_with_retry_after(make_settings: Any) -> None:
    """Nothing listens on port 1: the route's pool cannot connect. The sender is told to come
    back (503, Retry-After), not shown a 500, on either door of the route."""
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/tracker", lock_wait=2.0)
    try:
        with pytest.raises(OperationalError):
            _progress(down, make_settings(), 10)
        app = create_app(make_settings(database_url=down.url), db=down)
        client = app.test_client()
        for path in ("/callbacks/luma/" + TOKEN, "/callbacks/luma/" + TOKEN + "%21"):
            # the first is the fast path's; the second (not token-shaped) is Flask's route
            answer = client.post(path, json={"id": "up-driver", "state": "processing"})
            assert answer.status_code == 503, (path, answer.get_data(as_text=True))
            assert answer.headers["Retry-After"] == "5"
            assert "Traceback" not in answer.get_data(as_text=True)
    finally:
        down.dispose()
