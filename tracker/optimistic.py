"""PostgreSQL's callback write: optimistic, and for many callbacks at once.

A callback that does not move the task (progress, the usual one) is read without a lock,
with the row's version (the system column `xmin`, which every update of the row changes:
SQLAlchemy documents it as a version counter on PostgreSQL); the web process decides; one
statement then updates the task only if that version is still the row's, and inserts the
event only if the update happened. No BEGIN or COMMIT, no lock held while deciding.

Callbacks that arrive while others are being written are written together (the group
commit, tracker/group_commit.py): one SELECT reads every row they name, and one statement
writes them all (their values passed as arrays and unnested), so a batch costs two round
trips and one commit (one WAL flush) however many callbacks it holds. Measured in
docs/benchmarks.md ("Callback ingest"): each send over loopback TCP cost the web process
about 0.1 ms of CPU, and a statement pipeline per callback more than it saved.

What is not written here is said by the outcome, and the caller (tracker/ingest.py) writes
it another way:
- `AGAIN`: the row changed since it was read, or is locked by another writer right now
  (skipped, never waited for: two batches never wait on each other, so they cannot
  deadlock), or another callback of the batch names the same task. Nothing was written;
  the callback goes into a later batch, read afresh.
- `LOCKED`: a move, or an input the machine ignores; written in one transaction with the
  row locked, where the webhook deliveries a move makes are added.
"""

from __future__ import annotations

import hmac
from functools import cache
from typing import Any

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
from sqlalchemy.sql import Select

from . import driver, events, group_commit, lifecycle, machine
from .db import Database, table_of
from .machine import TaskFields
from .models import Task, TaskEvent, utcnow
from .parse import Update
from .settings import Settings
from .states import Source

_tasks = table_of(Task)
_events = table_of(TaskEvent)
# the columns `machine.decide` needs, the id, the token's hash, the task's own webhook
# target, and its next query (kept when a callback would barely move it: scheduler.timing)
FIELDS = (
    _tasks.c.id,
    _tasks.c.callback_token_hash,
    _tasks.c.notify_url,
    _tasks.c.next_check_at,
    *(_tasks.c[name] for name in TaskFields.__dataclass_fields__),
)
_row_version = cast(literal_column("tasks.xmin"), Text)
# every row a batch's callbacks name, unlocked, with its version
_PEEK = select(*FIELDS, _row_version.label("version_")).where(
    _tasks.c.callback_token_hash == any_(bindparam("hashes_", type_=postgresql.ARRAY(Text)))
)
_EVENT_COLUMNS = tuple(name for name in events.COLUMNS if name != "task_id")
AGAIN, LOCKED = object(), object()


class Callback(group_commit.Waiting):
    """A callback waiting for its batch, and what the batch's writer needs to write it."""

    __slots__ = ("db", "payload", "settings", "token_hash", "upd")

    def __init__(
        self, db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
    ) -> None:
        super().__init__()
        self.db, self.settings, self.token_hash = db, settings, token_hash
        self.upd, self.payload = upd, payload


def write_batch(batch: list[Callback]) -> None:
    """The group commit's writer: set each callback's outcome (None: no such task)."""
    driver.once_more(_write, batch[0].db, batch)


def _write(db: Database, batch: list[Callback]) -> None:
    with driver.statements(db) as st:
        hashes = list({item.token_hash for item in batch})
        rows = {row.callback_token_hash: row for row in st.all(_PEEK, {"hashes_": hashes})}
        writing: dict[int, tuple[Callback, dict[str, Any]]] = {}
        for item in batch:
            row = rows.get(item.token_hash)
            if row is None or not hmac.compare_digest(row.callback_token_hash, item.token_hash):
                item.outcome = None
            elif row.id in writing:  # decided on the row as read, it would undo the other
                item.outcome = AGAIN
            else:
                values = _decided(item, row)
                if values is None:
                    item.outcome = LOCKED
                else:
                    item.outcome = AGAIN  # until the write says otherwise
                    writing[row.id] = (item, values)
        if not writing:
            return
        columns = tuple(sorted({name for _, values in writing.values() for name in values["set"]}))
        arrays: dict[str, list[Any]] = {"id": [], "version": []}
        for name in columns:
            arrays[name], arrays[f"set_{name}"] = [], []
        for name in _EVENT_COLUMNS:
            arrays[f"event_{name}"] = []
        for task_id, (_, values) in writing.items():
            arrays["id"].append(task_id)
            arrays["version"].append(values["version"])
            for name in columns:
                given = values["set"]
                arrays[name].append(given.get(name))
                arrays[f"set_{name}"].append(name in given)
            for name in _EVENT_COLUMNS:
                arrays[f"event_{name}"].append(values["event"][name])
        written = st.all(_write_each(columns), arrays)
    for row in written:
        writing[row.id][0].outcome = False


def _decided(item: Callback, row: driver.Row) -> dict[str, Any] | None:
    """The callback's write on `row` as read, or None when it is not written here (a move,
    or an input the machine ignores)."""
    now = utcnow()
    change = machine.decide(TaskFields.of(row), item.upd, Source.CALLBACK, now)
    if change.ignored or change.state is not None:
        return None
    given = lifecycle.values_of(item.settings, change, item.token_hash, now, row.next_check_at)
    event = events.values(
        row.id,
        item.token_hash,
        Source.CALLBACK,
        before=row.state,
        after=row.state,
        payload=item.payload,
        note=change.note,
        dedupe=True,
    )
    return {"set": given, "event": event, "version": row.version_}


@cache  # one statement per set of columns a batch's changes set (a handful), compiled once each
def _write_each(columns: tuple[str, ...]) -> Select[Any]:
    """For every task given, unless its row changed since it was read or another writer
    holds it: UPDATE the columns each one sets (a column it does not set keeps its value),
    and INSERT its event. The ids of the tasks written."""
    given = [
        ("id", _tasks.c.id.type),
        ("version", Text()),
        *((name, _tasks.c[name].type) for name in columns),
        *((f"set_{name}", Boolean()) for name in columns),
        *((f"event_{name}", _events.c[name].type) for name in _EVENT_COLUMNS),
    ]
    arrays = [bindparam(name, type_=postgresql.ARRAY(type_)) for name, type_ in given]
    rows = (
        func.unnest(*arrays)
        .table_valued(*(column(name, type_) for name, type_ in given))
        .render_derived(name="given")
    )
    inputs = select(*rows.c).cte("inputs")
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
            select(inputs.c.id, *(inputs.c[f"event_{n}"] for n in _EVENT_COLUMNS)).join(
                task, task.c.id == inputs.c.id
            ),
        )
        .on_conflict_do_nothing(index_elements=["task_id", "fingerprint"])
        .cte("event")
    )
    return select(task.c.id).add_cte(event)
