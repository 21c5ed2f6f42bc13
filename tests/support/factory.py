"""Tasks in any state, made without HTTP: `make_task(db, "failed", failure_reason="...")`.

A task is created as the service creates one (`store.create`: queued, counted, its `submit`
event), then put in `state` with its other columns by one direct UPDATE (tests are exempt
from the single-writer rule), the per-state counters moved with it (`rows.moved`, as every
move of the service does). Nothing else of a move is written: no event, no webhook row, no
schedule. A test about those drives the service (the API, a callback, the worker) instead.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Any

from sqlalchemy import update

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import store
from tracker.tasks.models import Task, utcnow
from tracker.tasks.rows import moved, record
from tracker.tasks.states import TaskState
from tracker.tasks.store import NewTask
from tracker.upstream.parse import Update

PROMPT = "a quiet harbour at dawn"
# what the create takes (kind, user_prompt, source_task_id, notify_url, ...); the rest are columns
_NEW = frozenset(field.name for field in dataclass_fields(NewTask))


def make_task(db: Database, state: str = "completed", **fields: Any) -> Task:
    """A task in `state`. `fields` are NewTask's (given to the create; `kind` is `extend` when
    a `source_task_id` is given, else `generate`) or any column of the task (`upstream_id`,
    `video_url`, `failure_reason`, `created_at`, ...). The task as stored comes back."""
    new = {name: value for name, value in fields.items() if name in _NEW}
    new.setdefault("user_prompt", PROMPT)
    new.setdefault("kind", "extend" if new.get("source_task_id") else "generate")
    task = store.create(db, NewTask(**new))
    columns = {name: value for name, value in fields.items() if name not in _NEW}
    wanted = TaskState(state)
    if wanted is not TaskState.QUEUED and not new.get("account"):
        columns.setdefault("account", "default")  # sent, as the one account of the settings
    if wanted is not TaskState.QUEUED or columns:
        with db.write() as session:
            session.execute(
                update(Task)
                .where(Task.id == task.id)
                .values({"state": wanted, "updated_at": utcnow()} | columns)
            )
            if wanted is not TaskState.QUEUED:
                moved(session, task.id, TaskState.QUEUED, wanted)
    return load_task(db, task.id)


def make_tasks(db: Database, count: int, state: str = "completed", **fields: Any) -> list[int]:
    """`count` tasks alike (`make_task`'s arguments), oldest first: their ids."""
    return [make_task(db, state, **fields).id for _ in range(count)]


def set_fields(db: Database, task_id: int, **columns: Any) -> None:
    """Columns of a stored task changed by a direct UPDATE, as time passing or another process
    would leave them (`created_at` an hour ago, a lease, an upstream id), its state untouched:
    a move goes through `make_task` or the service."""
    assert "state" not in columns, "a state is set by make_task, which keeps the counters"
    with db.write() as session:
        session.execute(update(Task).where(Task.id == task_id).values(columns))


def add_callbacks(db: Database, task_id: int, payloads: list[Any]) -> None:
    """Callback events with these payloads, recorded as the service records them (masked,
    stored as JSON text), each as if it had arrived while the task was queued."""
    with db.write() as session:
        task = session.get(Task, task_id)
        assert task is not None, f"task {task_id} is stored"
        for payload in payloads:
            record(session, task, "callback", before=TaskState.QUEUED, payload=payload)


def load_task(db: Database, task_id: int) -> Task:
    """The task as stored now (its columns loaded; its events are not)."""
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None, f"task {task_id} is stored"
        return task


def pending_by_callback(db: Database, settings: Settings, **fields: Any) -> int:
    """A queued task (`make_task`'s fields) moved to pending by a callback, as the service
    moves one: its `task.pending` webhook rows are written with the move."""
    task = make_task(db, "queued", **fields)
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        row.upstream_id = f"up-{task.id}"
        upd = Update(understood=True, state="pending", upstream_id=row.upstream_id)
        store.apply(session, settings, row, upd, "callback", payload={"state": "pending"})
    return task.id
