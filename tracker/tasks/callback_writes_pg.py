"""PostgreSQL's callback write: optimistic, and for many callbacks at once.

A callback that does not move the task (progress, the usual one) is read without a lock,
with the row's version (the system column `xmin`, which every update of the row changes:
SQLAlchemy documents it as a version counter on PostgreSQL); the web process decides; one
statement then updates the task only if that version is still the row's, and inserts the
event only if the update happened. No BEGIN or COMMIT, no lock held while deciding.

Callbacks that arrive while others are being written are written together (the group
commit, web/callbacks.py): one SELECT reads every row they name, and one statement
writes them all (their values passed as arrays and unnested), so a batch costs two round
trips and one commit (one WAL flush) however many callbacks it holds. Measured in
docs/benchmarks.md ("Callback ingest"): each send over loopback TCP cost the web process
about 0.1 ms of CPU, and a statement pipeline per callback more than it saved.

What is not written here is said by the outcome, and the caller (web/callbacks.py) has it
written another way (tasks/callback_writes.write_locked):
- `AGAIN`: the row changed since it was read, or is locked by another writer right now
  (skipped, never waited for: two batches never wait on each other, so they cannot
  deadlock). Nothing was written; the callback goes into a later batch, read afresh.
  Callbacks of one task in one batch are decided in order, each on the task as the one
  before leaves it, and written as one update; a move after them waits for a later batch.
- `LOCKED`: a move, or an input the machine ignores; written in one transaction with the
  row locked, where the webhook deliveries a move makes are added.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Text,
    any_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

if TYPE_CHECKING:  # what a batch holds (queued by web/callbacks.py)
    from tracker.tasks.callback_writes import Queued

from tracker import sql
from tracker.db import Database, table_of
from tracker.tasks import machine, rows
from tracker.tasks.models import Task, TaskEvent
from tracker.tasks.states import Source, Word

_tasks = table_of(Task)
_events = table_of(TaskEvent)
FIELDS = rows.FIELDS
_row_version = cast(literal_column("tasks.xmin"), Text)
# every row a batch's callbacks name, unlocked, with its version
_PEEK = select(*FIELDS, _row_version.label("version_")).where(
    _tasks.c.callback_token_hash == any_(bindparam("hashes_", type_=postgresql.ARRAY(Text)))
)
_EVENT_COLUMNS = tuple(name for name in rows.COLUMNS if name != "task_id")
AGAIN, LOCKED = object(), object()


def write_batch(batch: Sequence[Queued]) -> None:
    """The group commit's writer: set each callback's outcome (None: no such task).

    Written once more if the connection had died (a restarted server, say): nothing was
    written then, and the route's pool has no pre-ping (db.driver_engine), so the second try
    is on a new connection. A second failure is the web's 503, and the sender tries again.
    """
    db = batch[0].db
    try:
        _write(db, batch)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        _write(db, batch)
    for item in batch:
        if item.outcome is LOCKED:
            _write_locked(db, item)


def _write_locked(db: Database, item: Queued) -> None:
    """A move, or an input naming another task: in a transaction of its own, the row locked
    (SELECT ... FOR UPDATE), the counters in the one order every move takes them. One whose
    webhook deliveries need the Core way stays LOCKED: the caller writes it so."""
    try:
        with sql.write(db) as tx:
            item.outcome = rows.ingest(tx, item.settings, item.token_hash, item.upd, item.payload)
    except rows.Locked:
        pass
    except Exception as exc:  # this caller's 503 (or 500), and only this one's
        item.error = exc


class _Task:
    """One task's part of a batch: its callbacks, in order, and what they set together."""

    __slots__ = ("callbacks", "events", "row", "set", "version")

    def __init__(self, row: sql.Row) -> None:
        self.row, self.version = row, row.version_
        self.callbacks: list[Queued] = []
        self.events: list[dict[str, Any]] = []  # an identical one is stored once (ON CONFLICT)
        self.set: dict[str, Any] = {}


def _write(db: Database, batch: Sequence[Queued]) -> None:
    with sql.statements(db) as st:
        hashes = list({item.token_hash for item in batch})
        rows = {row.callback_token_hash: row for row in st.all(_PEEK, {"hashes_": hashes})}
        tasks: dict[int, _Task] = {}
        for item in batch:
            row = rows.get(item.token_hash)
            if row is None or not hmac.compare_digest(row.callback_token_hash, item.token_hash):
                item.outcome = None
                continue
            task = tasks.get(row.id)
            # a callback after another of the same task is decided on the row as that one
            # leaves it, and their changes are written as one
            decided = _decided(item, row if task is None else task.row)
            if decided is None:  # after another of the batch: once that one is written
                item.outcome = LOCKED if task is None else AGAIN
                continue
            if task is None:
                task = tasks[row.id] = _Task(row)
            item.outcome = AGAIN  # until the write says otherwise
            task.callbacks.append(item)
            task.set.update(decided["set"])
            task.row = sql.Row({**task.row, **decided["set"]})
            task.events.append(decided["event"])
        if not tasks:
            return
        written = st.all(*_arrays(tasks))
    for row in written:
        for item in tasks[row.id].callbacks:
            item.outcome = False


def _arrays(tasks: dict[int, _Task]) -> tuple[Select[Any], dict[str, list[Any]]]:
    """The batch's statement, and its values as one array a column."""
    columns = tuple(sorted({name for task in tasks.values() for name in task.set}))
    arrays: dict[str, list[Any]] = {"id": [], "version": [], "event_task_id": []}
    for name in columns:
        arrays[name], arrays[f"set_{name}"] = [], []
    for name in _EVENT_COLUMNS:
        arrays[f"event_{name}"] = []
    for task_id, task in tasks.items():
        arrays["id"].append(task_id)
        arrays["version"].append(task.version)
        for name in columns:
            arrays[name].append(task.set.get(name))
            arrays[f"set_{name}"].append(name in task.set)
        for event in task.events:
            arrays["event_task_id"].append(task_id)
            for name in _EVENT_COLUMNS:
                arrays[f"event_{name}"].append(event[name])
    return _write_each(columns), arrays


def _decided(item: Queued, row: sql.Row) -> dict[str, Any] | None:
    """The callback's write on `row` as read, or None when it is not written here (a move,
    or an input the machine ignores)."""
    now = datetime.now(UTC)  # (not db.utcnow: one module fewer on the hot path)
    change = machine.decide(machine.snapshot(row), Word(item.upd, Source.CALLBACK), now)
    if change.ignored or change.state is not None:
        return None
    given = rows.values_of(item.settings, change, item.token_hash, now, row.next_check_at)
    event = rows.values(
        row.id,
        item.token_hash,
        Source.CALLBACK,
        before=row.state,
        after=row.state,
        payload=item.payload,
        note=change.note,
        dedupe=True,
        now=now,
    )
    return {"set": given, "event": event, "version": row.version_}


@cache  # one statement per set of columns a batch's changes set (a handful), compiled once each
def _write_each(columns: tuple[str, ...]) -> Select[Any]:
    """For every task given, unless its row changed since it was read or another writer
    holds it: UPDATE the columns it sets (a column it does not set keeps its value), and
    INSERT its events. The ids of the tasks written."""
    task_columns = [
        ("id", _tasks.c.id.type),
        ("version", Text()),
        *((name, _tasks.c[name].type) for name in columns),
        *((f"set_{name}", Boolean()) for name in columns),
    ]
    event_columns = [
        ("event_task_id", _events.c.task_id.type),
        *((f"event_{name}", _events.c[name].type) for name in _EVENT_COLUMNS),
    ]
    inputs, events_in = (
        _unnested(given, name)
        for given, name in ((task_columns, "inputs"), (event_columns, "events_in"))
    )
    locked = (
        select(_tasks.c.id)
        .join(inputs, _tasks.c.id == inputs.c.id)
        .where(_row_version == inputs.c.version)
        .with_for_update(of=_tasks, skip_locked=True)
        .cte("locked")
    )
    task = (
        update(_tasks)
        .where(_tasks.c.id == inputs.c.id, inputs.c.id == locked.c.id)
        .values(
            {
                name: case((inputs.c[f"set_{name}"], inputs.c[name]), else_=_tasks.c[name])
                for name in columns
            }
        )
        .returning(_tasks.c.id)
        .cte("task")
    )
    event = (
        postgresql.insert(_events)
        .from_select(
            ["task_id", *_EVENT_COLUMNS],
            select(
                events_in.c.event_task_id, *(events_in.c[f"event_{n}"] for n in _EVENT_COLUMNS)
            ).join(task, task.c.id == events_in.c.event_task_id),
        )
        .on_conflict_do_nothing(index_elements=["task_id", "fingerprint"])
        .cte("event")
    )
    return select(task.c.id).add_cte(event)


def _unnested(given: list[tuple[str, Any]], name: str) -> Any:
    """A CTE of rows from one array parameter a column (each named as its column)."""
    arrays = [bindparam(column_name, type_=postgresql.ARRAY(type_)) for column_name, type_ in given]
    rows = (
        func.unnest(*arrays)
        .table_valued(*(column(column_name, type_) for column_name, type_ in given))
        .render_derived(name=f"{name}_rows")
    )
    return select(*rows.c).cte(name)
