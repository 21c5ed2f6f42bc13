"""A callback's write: the service's hot path (docs/benchmarks.md, "Callback ingest").

The web process's group commit (web/callbacks.py) hands its batches here on SQLite, and to
tasks/callback_writes_pg.py on PostgreSQL.

What is written, whichever way: the machine's decision on the task's row (found by the hash
of the URL's token), one UPDATE of the task (state, fields, schedule), the counters when the
state moved (`rows.moved`), and the event, inserted with ON CONFLICT DO NOTHING on its
(task, fingerprint) so that an identical delivery is stored once.

Three ways, the first that applies:
- PostgreSQL, a callback that does not move the state (progress, the usual one): optimistic,
  and grouped with the callbacks arriving meanwhile (tasks/callback_writes_pg.py): no lock
  held while deciding, one commit for a batch.
- SQLite: the statements on the driver's cursor, in one BEGIN IMMEDIATE transaction, also
  grouped: the callbacks arriving meanwhile are written one after another in that transaction
  (`write_batch`), so a batch takes the write lock and commits once.
- Otherwise (a move, an input naming another task, a row that kept changing under the
  optimistic write, or a move that makes webhook deliveries on SQLite): one transaction on a
  Core connection with the row locked (SELECT ... FOR UPDATE), where `webhooks.enqueue_in`
  adds the deliveries in that transaction (their bodies are the task as the API shows it).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import OperationalError

from tracker import sql
from tracker.db import Database, table_of
from tracker.settings import Settings
from tracker.tasks import callback_writes_pg, machine, rows, webhooks
from tracker.tasks.models import Task
from tracker.tasks.states import Source, Update, Word

_tasks = table_of(Task)
# built once: the driver compiles each once per dialect (and UPDATE once per set of columns)
_BY_TOKEN = (
    select(*callback_writes_pg.FIELDS)
    .where(_tasks.c.callback_token_hash == bindparam("hash_"))
    .with_for_update()
)
_UPDATE_TASK = update(_tasks).where(_tasks.c.id == bindparam("id_"))


class _Locked(Exception):
    """This callback is written the third way (see the module): on a Core connection."""


class _CoreTransaction(sql.Transaction):
    """The driver transaction's two calls, on a SQLAlchemy Core connection instead."""

    def __init__(self, connection: Connection) -> None:  # no driver cursor of its own
        self.core = connection
        self.dialect = connection.dialect

    def execute(self, statement: Any, values: dict[str, Any]) -> None:
        self.core.execute(statement, values)

    def first(self, statement: Any, values: dict[str, Any]) -> sql.Row | None:
        row = self.core.execute(statement, values).first()
        return None if row is None else sql.Row(row._mapping)


class Queued(Protocol):
    """A callback waiting in the web process's group commit (web/callbacks.py): what a batch
    writer reads, and the outcome (or error) it sets for the caller."""

    db: Database
    settings: Settings
    token_hash: str
    upd: Update
    payload: Any
    since: float
    outcome: object
    error: BaseException | None


def write_locked(
    db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
    """One callback in a transaction of its own, the row locked (the third way)."""
    with db.write_connection() as connection:
        return ingest(_CoreTransaction(connection), settings, token_hash, upd, payload)


def write_batch(batch: Sequence[Queued]) -> None:
    """SQLite's group commit: the batch's callbacks in arrival order, in one transaction.

    Each is decided on the task as the callbacks before it left it (the same connection
    reads its own writes). When the write fails, the callbacks not yet committed are each
    written again alone, so that one bad callback fails only itself; unless the database
    itself failed (locked past its wait, or gone): then each of them gets the 503 at once
    rather than a wait of its own.
    """
    db = batch[0].db
    written: list[Queued] = []
    try:
        _write_in_order(db, batch, written)
    except OperationalError as exc:
        for item in batch[len(written) :]:
            item.error = exc
    except Exception:
        for item in batch[len(written) :]:
            try:
                _write_in_order(db, [item], [])
            except Exception as exc:  # this caller's 503 (or 500), and only this one's
                item.error = exc


def _write_in_order(db: Database, items: Sequence[Queued], written: list[Queued]) -> None:
    """Set each item's outcome as it is committed (and add it to `written`), in order.

    Runs of them share a transaction; a move that makes webhook deliveries ends its run
    and is written next, alone, the Core way (see the module), so the order holds.
    """
    start = 0
    while start < len(items):
        outcomes: list[bool | None] = []
        alone = None
        # a locked database: the oldest caller waits no longer in all than a lone one would
        with sql.write(db, waited=time.monotonic() - items[start].since) as tx:
            for item in items[start:]:
                try:
                    outcomes.append(
                        ingest(tx, item.settings, item.token_hash, item.upd, item.payload)
                    )
                except _Locked:  # raised before this callback wrote anything
                    alone = item
                    break
        for item, outcome in zip(items[start:], outcomes, strict=False):  # committed
            item.outcome = outcome
            written.append(item)
        start += len(outcomes)
        if alone is not None:
            with db.write_connection() as connection:
                alone.outcome = ingest(
                    _CoreTransaction(connection),
                    *(alone.settings, alone.token_hash, alone.upd, alone.payload),
                )
            written.append(alone)
            start += 1


def ingest(
    tx: sql.Transaction, settings: Settings, token_hash: str, upd: Update, payload: Any
) -> bool | None:
    """The write in one transaction, the row locked (SQLite's way, and the third way)."""
    row = tx.first(_BY_TOKEN, {"hash_": token_hash})
    if row is None or not hmac.compare_digest(row.callback_token_hash or "", token_hash):
        return None
    now = datetime.now(UTC)  # (not db.utcnow: one module fewer on the hot path)
    change = machine.decide(machine.snapshot(row), Word(upd, Source.CALLBACK), now)
    after = row.state
    if not change.ignored:
        values = rows.values_of(settings, change, token_hash, now, row.next_check_at)
        if change.state is not None:
            # the move makes webhook deliveries (as webhooks.wanted says, read here in place)
            deliveries = change.state in webhooks.EVENT_TYPES and (
                webhooks.target or row.notify_url
            )
            if deliveries and not isinstance(tx, _CoreTransaction):
                raise _Locked  # rolled back by sql.write; the deliveries need Core
            rows.moved(tx, row.id, row.state, change.state)
            values["state"] = after = change.state
        values["id_"] = row.id
        tx.execute(_UPDATE_TASK, values)
        if change.state is not None and isinstance(tx, _CoreTransaction):
            webhooks.enqueue_in(tx.core, row.id, change.state)  # deliveries, in this transaction
    rows.insert(
        tx,
        rows.values(
            row.id,
            token_hash,
            Source.CALLBACK,
            before=row.state,
            after=after,
            payload=payload,
            note=change.note,
            dedupe=True,
            now=now,
        ),
    )
    return change.state is not None
