"""The rows a decision writes: the task's columns (its schedule included), the state
counters, and the event that records the input (every input, from any source, is one row).

Payloads are stored as JSON text that always loads again, with every secret masked (the
task's own callback token included, which only its hash remembers). Upstream inputs carry a
fingerprint (sha256 of source and payload) and are inserted with ON CONFLICT DO NOTHING on
the unique (task_id, fingerprint) index: an identical delivery is stored once, in one
statement, with no SELECT before it. NULL fingerprints never collide.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tracker import jsontext
from tracker.db import table_of
from tracker.redact import mask_token, redact
from tracker.settings import Settings
from tracker.sql import Transaction
from tracker.tasks import webhooks
from tracker.tasks.machine import decide, snapshot
from tracker.tasks.models import StateCount, Task, TaskEvent, utcnow
from tracker.tasks.schedule import first_check, query_delay
from tracker.tasks.states import RANK, Change, Next, Source, TaskFields, TaskState, Update, Word

MAX_PAYLOAD_CHARS = 256_000
_events = table_of(TaskEvent)
_INSERT_EVENT = {
    "sqlite": sqlite.insert(_events).on_conflict_do_nothing(
        index_elements=["task_id", "fingerprint"]
    ),
    "postgresql": postgresql.insert(_events).on_conflict_do_nothing(
        index_elements=["task_id", "fingerprint"]
    ),
}
# the columns `values` fills
COLUMNS = (
    "task_id",
    "source",
    "state_before",
    "state_after",
    "note",
    "payload",
    "fingerprint",
    "created_at",
)
# a Session, a Core connection, or the callback route's driver transaction (tracker/sql.py)
Executor = Session | Connection | Transaction


def _dialect(executor: Executor) -> str:
    if isinstance(executor, Connection | Transaction):
        return executor.dialect.name
    return executor.get_bind().dialect.name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scrub(token_hash: str | None, text: str, token: str | None = None) -> str:
    """`text` with every secret masked, the task's callback token included in any encoding.

    The token is known in memory while a create is sent (`token`); afterwards only its hash
    is, which `mask_token` uses.
    """
    return mask_token(redact(text, (token,) if token else ()), token_hash)


def payload_text(token_hash: str | None, payload: Any, token: str | None = None) -> str | None:
    """A payload as JSON text that always loads again (ASCII, no NaN), secrets masked.

    Text that was not JSON (a callback's garbage) is stored as a JSON string.
    """
    if payload is None:
        return None
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    # ASCII JSON holds no NUL (PostgreSQL text cannot) and no lone surrogate (no database can)
    text_value = scrub(token_hash, jsontext.dumps(payload), token)
    if len(text_value) > MAX_PAYLOAD_CHARS:
        text_value = text_value[:MAX_PAYLOAD_CHARS] + "…[truncated]"
    return text_value


def values(
    task_id: int,
    token_hash: str | None,
    source: str,
    *,
    before: str | None,
    after: str | None,
    payload: Any = None,
    note: str | None = None,
    dedupe: bool = False,
    token: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """An event's row: its payload as stored (secrets masked) and, with dedupe, its fingerprint."""
    body = payload_text(token_hash, payload, token)
    # only upstream inputs are de-duplicated: the unique index lets each fingerprint in once
    fingerprint = (
        hashlib.sha256(f"{source}\n{body}".encode()).hexdigest() if dedupe and body else None
    )
    return {
        "task_id": task_id,
        "source": str(source),
        "state_before": before,
        "state_after": after,
        "note": scrub(token_hash, note, token) if note else None,
        "payload": body,
        "fingerprint": fingerprint,
        "created_at": now or utcnow(),
    }


def insert(session: Executor, row: dict[str, Any]) -> None:
    """Insert an event's row (`values`); a fingerprint already stored for the task is skipped."""
    session.execute(_INSERT_EVENT[_dialect(session)], row)


def record(
    session: Session,
    task: Task,
    source: str,
    *,
    before: str | None,
    payload: Any = None,
    note: str | None = None,
    dedupe: bool = False,
    token: str | None = None,
) -> None:
    """Add an event; with dedupe, an identical payload from the same source is stored once."""
    task_id: int | None = task.id  # Mapped[int], but None until the task's first flush
    if task_id is None:
        session.add(task)
        session.flush()
    insert(
        session,
        values(
            task.id,
            task.callback_token_hash,
            source,
            before=before,
            after=task.state,
            payload=payload,
            note=note,
            dedupe=dedupe,
            token=token,
        ),
    )


_counts = table_of(StateCount)
_COUNT = (
    update(_counts)
    .where(_counts.c.state == bindparam("state_"))
    .values(count=_counts.c.count + bindparam("delta_"))
)


def moved(session: Executor, task_id: int | None, old: str | None, new: str) -> None:
    """Every state change passes here, in the transaction that makes it: the counters.

    The two counter rows are always updated in one order (by rank, then name), whatever the
    direction of the move, so that two transactions never wait on each other's counters.
    """
    deltas = {new: 1} if old is None else {old: -1, new: 1}
    # by rank, then name: the one order counters are locked in, so no two transactions wait
    # on each other's counters
    for state in sorted(deltas, key=lambda state: (RANK[TaskState(state)], state)):
        session.execute(_COUNT, {"state_": str(state), "delta_": deltas[state]})


# -- the task's columns a decision sets, its schedule included --------------------------------


def values_of(
    settings: Settings | None,
    change: Change,
    token_hash: str | None,
    now: datetime,
    current: datetime | None,
    token: str | None = None,
) -> dict[str, Any]:
    """The columns a Change sets: its fields, the reason masked, the schedule it leaves."""
    values = dict(change.fields)
    if reason := change.fields.get("failure_reason"):
        values["failure_reason"] = scrub(token_hash, reason, token)
    quiet = values.get("quiet_polls", 0)
    values.update(next_check_at(settings, change.next, quiet, now, current))
    return values


def next_check_at(
    settings: Settings | None,
    next_: Next,
    quiet_polls: int,
    now: datetime,
    current: datetime | None = None,
) -> dict[str, Any]:
    """The schedule column an input leaves (empty: unchanged), as `states.Next` says.

    The safety net (callbacks work for the task) is a query at most TRACKER_POLL_MAX_INTERVAL
    after the last news. A `current` time already between half that and all of it is kept:
    a run of progress callbacks then leaves the indexed column alone, so PostgreSQL updates
    the row in place (a HOT update) rather than every index of `tasks` on every callback
    (measured: docs/benchmarks.md, "Callback ingest"). The task is still never queried
    sooner than half the interval after news, nor later than the whole interval.
    """
    if next_ is Next.KEEP:
        return {}
    if next_ is Next.NEVER:
        return {"next_check_at": None}
    if next_ is Next.NOW:
        return {"next_check_at": now}
    if settings is None:
        raise ValueError(f"a schedule of {next_} needs the settings")
    if next_ is Next.FIRST:
        return {"next_check_at": first_check(settings, now)}
    if next_ is Next.SAFETY_NET:
        latest = now + timedelta(seconds=settings.poll_max_interval)
        soonest = now + timedelta(seconds=settings.poll_max_interval / 2)
        if current is not None and soonest <= current <= latest:
            return {}
        return {"next_check_at": latest}
    return {"next_check_at": now + timedelta(seconds=query_delay(settings, quiet_polls))}


# -- a callback's write, its row locked: SQLite's batches, PostgreSQL's moves, the Core way ---

_tasks = table_of(Task)
# the columns `machine.decide` needs, the id, the token's hash, the task's own webhook
# target, and its next query (kept when a callback would barely move it: next_check_at)
FIELDS = (
    _tasks.c.id,
    _tasks.c.callback_token_hash,
    _tasks.c.notify_url,
    _tasks.c.next_check_at,
    *(_tasks.c[name] for name in TaskFields.__dataclass_fields__),
)
# built once: the driver compiles each once per dialect (and UPDATE once per set of columns)
_BY_TOKEN = select(*FIELDS).where(_tasks.c.callback_token_hash == bindparam("hash_"))
_BY_TOKEN = _BY_TOKEN.with_for_update()
_UPDATE_TASK = update(_tasks).where(_tasks.c.id == bindparam("id_"))


class Locked(Exception):
    """The move makes webhook deliveries: written on a Core connection instead."""


def ingest(
    tx: Transaction,
    settings: Settings,
    token_hash: str,
    upd: Update,
    payload: Any,
    core: Connection | None = None,
) -> bool | None:
    """One callback in `tx`, its row locked: None when no task has this token, else whether
    the state moved. A move that makes webhook deliveries raises `Locked` unless the write
    is on a Core connection (`core`), where their rows are added in the same transaction."""
    row = tx.first(_BY_TOKEN, {"hash_": token_hash})
    if row is None or not hmac.compare_digest(row.callback_token_hash or "", token_hash):
        return None
    now = datetime.now(UTC)  # (not db.utcnow: one module fewer on the hot path)
    change = decide(snapshot(row), Word(upd, Source.CALLBACK), now)
    after = row.state
    if not change.ignored:
        columns = values_of(settings, change, token_hash, now, row.next_check_at)
        if change.state is not None:
            # the move makes webhook deliveries (webhooks.wanted, read here in place)
            targets = webhooks.target or row.notify_url
            if change.state in webhooks.EVENT_TYPES and targets and core is None:
                raise Locked  # rolled back by sql.write
            moved(tx, row.id, row.state, change.state)
            columns["state"] = after = change.state
        columns["id_"] = row.id
        tx.execute(_UPDATE_TASK, columns)
        if change.state is not None and core is not None:
            webhooks.enqueue_in(core, row.id, change.state)  # deliveries, in this transaction
    said = {"payload": payload, "note": change.note, "dedupe": True, "now": now}
    event = values(row.id, token_hash, Source.CALLBACK, before=row.state, after=after, **said)
    insert(tx, event)
    return change.state is not None
