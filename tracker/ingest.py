"""A callback's write: the service's hot path (docs/benchmarks.md, "Callback ingest").

What is written, whichever way: the machine's decision on the task's row (found by the hash
of the URL's token), one UPDATE of the task (state, fields, schedule), the counters when the
state moved (`lifecycle.moved`), and the event, inserted with ON CONFLICT DO NOTHING on its
(task, fingerprint) so that an identical delivery is stored once.

Three ways, the first that applies:
- PostgreSQL, a callback that does not move the state (progress, the usual one): optimistic.
  The row is read without a lock, with its version (the system column `xmin`, which every
  update of the row changes: SQLAlchemy documents it as a version counter on PostgreSQL);
  the web process decides; one statement then updates the task only if that version is
  still the row's and inserts the event only if the update happened. Two round trips, no
  BEGIN or COMMIT, no row lock held while the web process decides. Had another writer
  changed the row in between, nothing was written, and the next way runs.
- SQLite: the statements on the driver's cursor, in one BEGIN IMMEDIATE transaction.
- Otherwise (a move, an input naming another task, the row changed under the optimistic
  write, or a move that makes webhook deliveries on SQLite): one transaction on a Core
  connection with the row locked (SELECT ... FOR UPDATE), where `webhooks.enqueue_in` adds
  the deliveries in that transaction (their bodies are the task as the API shows it).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Text, bindparam, cast, func, literal_column, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from . import driver, events, lifecycle, machine, webhooks
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
_FIELDS = (
    _tasks.c.id,
    _tasks.c.callback_token_hash,
    _tasks.c.notify_url,
    _tasks.c.next_check_at,
    *(_tasks.c[name] for name in TaskFields.__dataclass_fields__),
)
# built once: the driver compiles each once per dialect (and UPDATE once per set of columns)
_BY_TOKEN = (
    select(*_FIELDS).where(_tasks.c.callback_token_hash == bindparam("hash_")).with_for_update()
)
_UPDATE_TASK = update(_tasks).where(_tasks.c.id == bindparam("id_"))
# PostgreSQL's optimistic read: no lock, and the row's version
_row_version = cast(literal_column("xmin"), Text)
_PEEK = select(*_FIELDS, _row_version.label("version_")).where(
    _tasks.c.callback_token_hash == bindparam("hash_")
)
_EVENT_COLUMNS = tuple(name for name in events.COLUMNS if name != "task_id")

T = TypeVar("T")


class _Locked(Exception):
    """This callback is written the third way (see the module): on a Core connection."""


class _CoreTransaction(driver.Transaction):
    """The driver transaction's two calls, on a SQLAlchemy Core connection instead."""

    def __init__(self, connection: Connection) -> None:  # no driver cursor of its own
        self.core = connection
        self.dialect = connection.dialect

    def execute(self, statement: Any, values: dict[str, Any]) -> None:
        self.core.execute(statement, values)

    def first(self, statement: Any, values: dict[str, Any]) -> driver.Row | None:
        row = self.core.execute(statement, values).first()
        return None if row is None else driver.Row(row._mapping)


def callback(
    db: Database, settings: Settings, token: str, upd: Update, payload: Any
) -> bool | None:
    """Write one callback: None when no task has this token, else whether the state moved."""
    token_hash = events.hash_token(token)
    try:
        if db.is_postgres:
            return _once_more(optimistic, db, settings, token_hash, upd, payload)
        return _once_more(_on_driver, db, settings, token_hash, upd, payload)
    except _Locked:
        with db.write_connection() as connection:
            return ingest(_CoreTransaction(connection), settings, token_hash, upd, payload)


def _once_more(write: Callable[..., T], *args: Any) -> T:
    """`write(*args)`, and once more if its connection had died (a restarted server, say).

    Nothing was written then; the route's pool has no pre-ping (db.driver_engine), so the
    second try is on a new connection. A second failure is the web's 503, and the sender
    tries again.
    """
    try:
        return write(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return write(*args)


def _on_driver(
    db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
    with driver.write(db) as tx:
        return ingest(tx, settings, token_hash, upd, payload)


def ingest(
    tx: driver.Transaction, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
    """The write in one transaction, the row locked (SQLite's way, and the third way)."""
    row = tx.first(_BY_TOKEN, {"hash_": token_hash})
    if row is None or not hmac.compare_digest(row.callback_token_hash or "", token_hash):
        return None
    now = utcnow()
    change = machine.decide(TaskFields.of(row), upd, Source.CALLBACK, now)
    after = row.state
    if not change.ignored:
        values = lifecycle.values_of(settings, change, token_hash, now, row.next_check_at)
        if change.state is not None:
            if webhooks.wanted(change.state, row.notify_url) and not isinstance(
                tx, _CoreTransaction
            ):
                raise _Locked  # rolled back by driver.write; the deliveries need Core
            lifecycle.moved(tx, row.id, row.state, change.state)
            values["state"] = after = change.state
        values["id_"] = row.id
        tx.execute(_UPDATE_TASK, values)
        if change.state is not None and isinstance(tx, _CoreTransaction):
            webhooks.enqueue_in(tx.core, row.id, change.state)  # deliveries, in this transaction
    events.insert(
        tx,
        events.values(
            row.id,
            token_hash,
            Source.CALLBACK,
            before=row.state,
            after=after,
            payload=payload,
            note=change.note,
            dedupe=True,
        ),
    )
    return change.state is not None


def optimistic(
    db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
    """PostgreSQL's first way (see the module); raises _Locked when it does not apply."""
    with driver.statements(db) as st:
        row = st.first(_PEEK, {"hash_": token_hash})
        if row is None or not hmac.compare_digest(row.callback_token_hash or "", token_hash):
            return None
        now = utcnow()
        change = machine.decide(TaskFields.of(row), upd, Source.CALLBACK, now)
        if change.ignored or change.state is not None:
            raise _Locked
        values = lifecycle.values_of(settings, change, token_hash, now, row.next_check_at)
        event = events.values(
            row.id,
            token_hash,
            Source.CALLBACK,
            before=row.state,
            after=row.state,
            payload=payload,
            note=change.note,
            dedupe=True,
        )
        bound = {f"set_{name}": value for name, value in values.items()}
        bound.update((f"event_{name}", event[name]) for name in _EVENT_COLUMNS)
        bound.update(id_=row.id, version_=row.version_)
        written = st.first(_write_if_unchanged(tuple(values)), bound)
    if written is None or not written.updated:
        raise _Locked  # the row changed since it was read: nothing was written
    return False


@cache  # one statement per set of columns a change sets (a handful), compiled once each
def _write_if_unchanged(columns: tuple[str, ...]) -> Select[Any]:
    """UPDATE the task where its version is still the one read, and INSERT the event only
    when that UPDATE matched; the number of tasks updated (0 or 1)."""
    task = (
        update(_tasks)
        .where(_tasks.c.id == bindparam("id_"), _row_version == bindparam("version_"))
        .values({name: bindparam(f"set_{name}", type_=_tasks.c[name].type) for name in columns})
        .returning(_tasks.c.id)
        .cte("task")
    )
    event = (
        postgresql.insert(_events)
        .from_select(
            ["task_id", *_EVENT_COLUMNS],
            select(
                task.c.id,
                *(bindparam(f"event_{n}", type_=_events.c[n].type) for n in _EVENT_COLUMNS),
            ),
        )
        .on_conflict_do_nothing(index_elements=["task_id", "fingerprint"])
        .cte("event")
    )
    return select(func.count().label("updated")).select_from(task).add_cte(event)
