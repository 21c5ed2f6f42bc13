"""Every claim, lease and backoff of a webhook delivery, in one place.

- `claim` takes due pending rows with a lease (`claimed_until`, `claimed_by`) in the
  transaction that picks them, up to a number per kind of target ("global": the operator's
  TRACKER_NOTIFY_URL; "task": a task's own notify_url): PostgreSQL's FOR UPDATE SKIP LOCKED
  lets workers pass each other, SQLite's BEGIN IMMEDIATE serializes them. So two workers never
  send one delivery at once. A killed worker's lease expires (LEASE_SECONDS) or is taken over
  as soon as its heartbeat goes stale; the event is then sent by another (at least once). A row
  the sender has no room for (its host already has its share in flight) can be put back a
  moment (DEFER_BUSY, no try counted), so that rows behind it go first.
- An attempt ends within TIMEOUT, and starts only if it can end MARGIN before its lease does
  (`Claimed.lease_ends`; else its lease is given back), so no other worker can take the row
  while it is in flight.
- `record` records attempts, many in one transaction, and, for the lease's holder, settles
  each row: a 2xx is `succeeded`; anything else waits the next delay of
  TRACKER_NOTIFY_RETRY_SCHEDULE, and after the last one the row is `failed`. A row not sent
  because its target is down (`flows/notify.Targets`) waits without a try counted.
- `redeliver` sends a row again (same `webhook-id`), whatever its state.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, bindparam, func, or_, select, update

from tracker.db import Database, table_of
from tracker.settings import Settings
from tracker.tasks import heartbeats
from tracker.tasks.models import Delivery, utcnow

TIMEOUT = 10.0  # seconds for one attempt, start to end (connect, send, headers and body)
# an attempt ends within TIMEOUT; the lease outlives it with room for a wait in the sender's
# queue and a slow database; an attempt starts only if it can end MARGIN before its lease
LEASE_SECONDS = 3 * TIMEOUT
MARGIN = 5.0
DEFER_BUSY = 1.0  # seconds a due row waits when its host has no room (no try counted)
WINDOW = 4  # rows looked at per row wanted when some may have no room
MAX_RESPONSE_CHARS = 200
MAX_ATTEMPTS = 100  # kept per row
_TABLE = table_of(Delivery)  # the loop's statements are Core's (`db.write_connection`)


@dataclass(frozen=True)
class Claimed:
    """What a sender needs of a delivery; the row stays in the database."""

    id: int
    task_id: int
    webhook_id: str
    type: str
    target: str
    target_kind: str
    payload: str
    lease_ends: float = math.inf  # time.monotonic() when this process's lease ends


@dataclass(frozen=True)
class Attempt:
    """One attempt, to be recorded: its row, what `attempts` shows, whether a 2xx, and for the
    log line the status or why none, and its time. `record` None: not made (too little of its
    lease left, or its target is down); the lease is given back. With `wait`, no try is
    counted (its target is down) and the row falls due again that many seconds from now."""

    item: Claimed
    record: dict[str, Any] | None
    ok: bool
    said: str
    latency_ms: int
    wait: float | None = None


def _free(now: datetime) -> Any:
    return or_(
        Delivery.claimed_until.is_(None),
        Delivery.claimed_until < now,
        heartbeats.held_by_dead(Delivery.claimed_by, now),
    )


_CLAIMED = ("id", "task_id", "webhook_id", "type", "target", "target_kind", "payload")


def host_of(url: str) -> str:
    return urlsplit(url).hostname or "?"


def claim(
    conn: Connection,
    owner: str,
    room: Mapping[str, int],
    busy: Counter[str] | None = None,
    per_host: int = 0,
) -> list[Claimed]:
    """Lease due deliveries (oldest due first) to `owner`: up to room[kind] of each kind.

    `busy`, when given, counts the sender's tasks' targets in flight by host: a task's row
    whose host has `per_host` is put back DEFER_BUSY seconds (no try counted).
    """
    now, clock = utcnow(), time.monotonic()
    hosts = Counter(busy)
    taken: list[Claimed] = []
    passed: list[int] = []
    columns = [_TABLE.c[name] for name in (*_CLAIMED, "next_attempt_at")]
    lease = {"claimed_until": now + timedelta(seconds=LEASE_SECONDS), "claimed_by": owner}
    for kind, wanted in room.items():
        if wanted <= 0:
            continue
        weigh = busy is not None and kind == "task"
        due = (
            select(Delivery.id)
            .where(
                Delivery.state == "pending",
                Delivery.target_kind == kind,
                Delivery.next_attempt_at <= now,
                Delivery.payload.is_not(None),
                _free(now),
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(wanted * WINDOW if weigh else wanted)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        if weigh:  # read, weighed here, then leased
            picked: Any = select(*columns).where(_TABLE.c.id.in_(due))
        else:  # leased by the statement that picks them: one round trip
            picked = update(_TABLE).where(_TABLE.c.id.in_(due)).values(lease).returning(*columns)
        weighed: list[int] = []
        for r in sorted(conn.execute(picked).all(), key=lambda r: (r.next_attempt_at, r.id)):
            # the query asks for a payload; the column itself allows none, hence the `or ""`
            fields = (r.id, r.task_id, r.webhook_id, r.type, r.target, r.target_kind)
            item = Claimed(*fields, r.payload or "", lease_ends=clock + LEASE_SECONDS)
            host = host_of(item.target) if weigh else ""
            if host and hosts[host] >= per_host:
                passed.append(item.id)
                continue
            hosts[host] += 1
            taken.append(item)
            if weigh:
                weighed.append(item.id)
                if len(weighed) >= wanted:  # the rest stay where they are
                    break
        if weighed:
            conn.execute(update(_TABLE).where(_TABLE.c.id.in_(weighed)).values(lease))
    if passed:
        conn.execute(
            update(_TABLE)
            .where(_TABLE.c.id.in_(passed))
            .values(next_attempt_at=now + timedelta(seconds=DEFER_BUSY))
        )
    return taken


def attempt_record(
    at: datetime, status: int | None, latency_ms: int, response: str
) -> dict[str, Any]:
    """One attempt as GET /api/tasks/<id>/deliveries shows it (`status` None: no answer)."""
    return {
        "at": at.isoformat().replace("+00:00", "Z"),
        "status": status,
        "latency_ms": latency_ms,
        "response": response[:MAX_RESPONSE_CHARS],
    }


_RECORDED = (
    Delivery.id,
    Delivery.attempts,
    Delivery.state,
    Delivery.tries,
    Delivery.next_attempt_at,
    Delivery.claimed_until,
    Delivery.claimed_by,
)


_SETTLED = ("attempts", "state", "tries", "next_attempt_at", "claimed_until", "claimed_by")
_SETTLE = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    .values({k: bindparam(f"b_{k}", type_=_TABLE.c[k].type) for k in _SETTLED})
)


def record(
    conn: Connection, settings: Settings, owner: str, attempts: Sequence[Attempt]
) -> dict[int, str | None]:
    """Record attempts; the lease's holder also settles or reschedules each row.

    Returns each row's state afterwards (None when the row is gone with its task). A row
    redelivered or taken over meanwhile keeps its new course: only the attempt is added.
    """
    if not attempts:
        return {}
    now, schedule = utcnow(), settings.notify_retry_schedule
    ids = sorted({attempt.item.id for attempt in attempts})
    found = conn.execute(
        select(*_RECORDED).where(Delivery.id.in_(ids)).order_by(Delivery.id).with_for_update()
    )
    rows = {row.id: row._asdict() for row in found.all()}  # one fetch: each one costs a GIL turn
    for attempt in attempts:
        row = rows.get(attempt.item.id)
        if row is None:
            continue
        if attempt.record is not None:  # the last MAX_ATTEMPTS: a long outage's probes
            row["attempts"] = [*(row["attempts"] or []), attempt.record][-MAX_ATTEMPTS:]
        if row["claimed_by"] != owner:
            continue
        row["claimed_until"] = row["claimed_by"] = None
        if attempt.record is None:
            if attempt.wait is not None:
                row["next_attempt_at"] = now + timedelta(seconds=attempt.wait)
            continue
        if attempt.ok:
            row["state"], row["next_attempt_at"] = "succeeded", None
            continue
        if attempt.wait is not None:  # its target is down: a probe, no try counted
            row["next_attempt_at"] = now + timedelta(seconds=attempt.wait)
            continue
        row["tries"] = tries = (row["tries"] or 0) + 1
        if tries > len(schedule):
            row["state"], row["next_attempt_at"] = "failed", None
        else:
            row["next_attempt_at"] = now + timedelta(seconds=schedule[tries - 1])
    if rows:  # one statement, executemany
        conn.execute(_SETTLE, [{f"b_{k}": v for k, v in row.items()} for row in rows.values()])
    return {attempt.item.id: rows.get(attempt.item.id, {}).get("state") for attempt in attempts}


def release(db: Database, owner: str, ids: list[int]) -> None:
    """Give back leases on deliveries not attempted (the worker is stopping)."""
    if not ids:
        return
    with db.write() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.claimed_by == owner)
            .values(claimed_until=None, claimed_by=None)
            .execution_options(synchronize_session=False)
        )


def redeliver(db: Database, delivery_id: int) -> bool:
    """Send again now with the same webhook-id (a fresh round of retries); False: no such row."""
    now = utcnow()
    with db.write() as session:
        row = session.get(Delivery, delivery_id, with_for_update=True)
        if row is None:
            return False
        row.state, row.tries, row.next_attempt_at = "pending", 0, now
        # a send in flight keeps its lease (never two at once); its outcome settles the row
        if row.claimed_until is None or row.claimed_until < now:
            row.claimed_until = row.claimed_by = None
    return True


def next_due(db: Database) -> datetime | None:
    """When the next pending delivery falls due (the sender sleeps until then, or less)."""
    with db.read() as session:
        return session.scalar(
            select(func.min(Delivery.next_attempt_at)).where(Delivery.state == "pending")
        )
