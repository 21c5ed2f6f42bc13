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

import time
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from tracker import sql
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import rows
from tracker.tasks.states import Update


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
        core = _CoreTransaction(connection)
        return rows.ingest(core, settings, token_hash, upd, payload, core=connection)


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
                        rows.ingest(tx, item.settings, item.token_hash, item.upd, item.payload)
                    )
                except rows.Locked:  # raised before this callback wrote anything
                    alone = item
                    break
        for item, outcome in zip(items[start:], outcomes, strict=False):  # committed
            item.outcome = outcome
            written.append(item)
        start += len(outcomes)
        if alone is not None:
            alone.outcome = write_locked(
                db, alone.settings, alone.token_hash, alone.upd, alone.payload
            )
            written.append(alone)
            start += 1
