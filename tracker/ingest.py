"""A callback's write: the service's hot path (docs/benchmarks.md, "Callback ingest").

One transaction: the task's row by the hash of the URL's token (locked on PostgreSQL), the
machine's decision, one UPDATE of the task (state, fields, schedule), the counters when the
state moved (`lifecycle.moved`), and the event inserted with ON CONFLICT DO NOTHING on its
(task, fingerprint), so an identical delivery is stored once.

The statements are Core's and run on the driver's cursor (`tracker/driver.py`), which is
where the route's CPU went. One case needs SQLAlchemy's Session: a move that makes outgoing
webhook deliveries (their bodies are the task as the API shows it, built from the ORM
object). Then the driver's transaction is rolled back and the same function runs again on
a Core connection, where `webhooks.enqueue_in` adds the deliveries in that transaction.
"""

from __future__ import annotations

import hmac
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import DBAPIError

from . import driver, events, lifecycle, machine, webhooks
from .db import Database, table_of
from .machine import TaskFields
from .models import Task, utcnow
from .parse import Update
from .settings import Settings
from .states import Source

_tasks = table_of(Task)
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


class _NeedsSession(Exception):
    """The move makes webhook deliveries: run again on a Core connection."""


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
        return _on_driver(db, settings, token_hash, upd, payload)
    except _NeedsSession:
        with db.write_connection() as connection:
            return ingest(_CoreTransaction(connection), settings, token_hash, upd, payload)


def _on_driver(
    db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
    try:
        with driver.write(db) as tx:
            return ingest(tx, settings, token_hash, upd, payload)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    # the connection had died (a restarted server, say): nothing was written, so once more
    # on a new one (the pool has no pre-ping: db.driver_engine); a second failure is the
    # web's 503, and the sender tries again
    with driver.write(db) as tx:
        return ingest(tx, settings, token_hash, upd, payload)


def ingest(
    tx: driver.Transaction, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
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
                raise _NeedsSession
            lifecycle.moved(tx, row.id, row.state, change.state)
            values["state"] = after = change.state
        values["id_"] = row.id
        tx.execute(_UPDATE_TASK, values)
        if change.state is not None and isinstance(tx, _CoreTransaction):
            webhooks.enqueue_in(tx.core, row.id, change.state)  # deliveries, in this transaction
    events.insert(
        tx,
        row.id,
        token_hash,
        Source.CALLBACK,
        before=row.state,
        after=after,
        payload=payload,
        note=change.note,
        dedupe=True,
    )
    return change.state is not None
