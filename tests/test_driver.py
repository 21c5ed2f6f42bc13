"""The callback route's transaction on the driver's cursor (tracker/sql.py).

Every test runs on SQLite and on PostgreSQL (the `db` fixture). On PostgreSQL a callback that
does not move the task is read without a lock and written by one statement that checks the
row did not change meanwhile (tracker/tasks/callback_writes.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import bindparam, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.support.databases import TEST_DATABASE_URL
from tests.support.sent import sent_task
from tracker import sql as driver
from tracker.db import Database, table_of
from tracker.tasks import machine, rows
from tracker.tasks.models import Task, TaskEvent
from tracker.tasks.states import Source
from tracker.upstream.parse import Update
from tracker.web import callbacks as web_callbacks
from tracker.web.app import create_app

TOKEN = "driver-test-token-" + "y" * 30
_events = table_of(TaskEvent)
_INSERT_ORPHAN = (
    insert(_events)
    .values({name: bindparam(f"e_{name}") for name in rows.COLUMNS})
    .returning(_events.c.id)
)


def _processing(db: Database) -> int:
    return sent_task(db, TOKEN, "up-driver", "processing")


def _progress(db: Database, settings: Any, progress: int) -> bool | None:
    upd = Update(understood=True, state="processing", upstream_id="up-driver", progress=progress)
    return web_callbacks.write(db, settings, TOKEN, upd, {"progress": progress})


def test_a_failed_write_rolls_back_and_the_next_callbacks_still_go_through(
    db: Database, make_settings: Any
) -> None:
    """A write that fails (here: an event for a task that is not there) leaves nothing, and
    the same pool's connections take the next callbacks: a transaction (SQLite's, and
    PostgreSQL's for a move) is rolled back; on PostgreSQL a failed single statement was its
    own transaction, and the statements the connection had prepared still serve."""
    settings = make_settings()
    task_id = _processing(db)
    fresh = Database(db.url, lock_wait=2.0)  # a pool of its own: one connection in use
    orphan = rows.values(task_id + 1000, None, Source.CALLBACK, before=None, after=None)
    try:
        assert _progress(fresh, settings, 5) is False  # PostgreSQL: its statements prepared
        if db.is_postgres:
            with pytest.raises(IntegrityError), driver.statements(fresh) as st:
                st.first(_INSERT_ORPHAN, {f"e_{k}": v for k, v in orphan.items()})
        with pytest.raises(IntegrityError), driver.write(fresh) as tx:
            tx.execute(rows._UPDATE_TASK, {"progress": 99, "id_": task_id})
            rows.insert(tx, orphan)
        with db.read() as session:
            task = session.get(Task, task_id)
            assert task is not None and task.progress == 5  # the UPDATE was rolled back
        for progress in (10, 20, 30):
            assert _progress(fresh, settings, progress) is False
    finally:
        fresh.dispose()
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.progress == 30
        stored = [json.loads(e.payload) for e in task.events if e.source == "callback"]
    assert stored == [{"progress": p} for p in (5, 10, 20, 30)]


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs TEST_DATABASE_URL (CI sets it)")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # read without a lock
def test_a_callback_decided_on_a_row_that_changed_meanwhile_loses_nothing(
    db: Database, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL reads the row without a lock; another callback for the task lands while
    this one is being decided. Its write must not undo the other's: both events are kept,
    and the progress is the larger one (a lost update would leave 50)."""
    settings = make_settings()
    task_id = _processing(db)
    decide = machine.decide
    landed: list[bool | None] = []
    other = Database(db.url)  # another web process: its own pool and group commit

    def decide_while_another_lands(*args: Any) -> machine.Change:
        if not landed:  # once: the other callback is written, start to end, right now
            landed.append(None)
            landed[0] = _progress(other, settings, 80)
        return decide(*args)

    monkeypatch.setattr(machine, "decide", decide_while_another_lands)
    try:
        assert _progress(db, settings, 50) is False
    finally:
        other.dispose()
    assert landed == [False]
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.progress == 80
        stored = sorted(json.loads(e.payload)["progress"] for e in task.events if e.payload)
    assert stored == [50, 80]


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
