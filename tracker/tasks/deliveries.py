"""Every claim, lease and backoff of a webhook delivery, in one place.

- `claim_deliveries` takes due pending rows with a lease (`claimed_until`, `claimed_by`) in
  the transaction that picks them: PostgreSQL's FOR UPDATE SKIP LOCKED lets workers pass
  each other, SQLite's BEGIN IMMEDIATE serializes them. So two workers never send one
  delivery at once. A killed worker's lease expires (LEASE_SECONDS) or is taken over as
  soon as its heartbeat goes stale; the event is then sent by another (at least once).
- `finish` records an attempt and, for the lease's holder, settles the row: a 2xx is
  `succeeded`; anything else waits the next delay of TRACKER_NOTIFY_RETRY_SCHEDULE, and
  after the last one the row is `failed`.
- `redeliver` sends a row again (same `webhook-id`), whatever its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import heartbeats
from tracker.tasks.models import Delivery, utcnow

TIMEOUT = 10.0  # seconds for one attempt, start to end
# an attempt ends within TIMEOUT; the lease outlives it with room for a slow database
LEASE_SECONDS = 3 * TIMEOUT
MAX_RESPONSE_CHARS = 200


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


def _free(now: datetime) -> Any:
    return or_(
        Delivery.claimed_until.is_(None),
        Delivery.claimed_until < now,
        heartbeats.held_by_dead(Delivery.claimed_by, now),
    )


def claim_deliveries(db: Database, owner: str, limit: int) -> list[Claimed]:
    """Lease up to `limit` due deliveries (oldest due first) to `owner`."""
    now = utcnow()
    with db.write() as session:
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.task_id,
                Delivery.webhook_id,
                Delivery.type,
                Delivery.target,
                Delivery.target_kind,
                Delivery.payload,
            )
            .where(
                Delivery.state == "pending",
                Delivery.next_attempt_at <= now,
                Delivery.payload.is_not(None),
                _free(now),
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_([row.id for row in rows]))
                .values(claimed_until=now + timedelta(seconds=LEASE_SECONDS), claimed_by=owner)
                .execution_options(synchronize_session=False)
            )
    # the query asks for a payload; the column itself allows none, hence the `or ""`
    return [
        Claimed(r.id, r.task_id, r.webhook_id, r.type, r.target, r.target_kind, r.payload or "")
        for r in rows
    ]


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


def finish(
    db: Database,
    settings: Settings,
    delivery_id: int,
    owner: str,
    attempt: dict[str, Any],
    ok: bool,
) -> str | None:
    """Record an attempt; the lease's holder also settles or reschedules the row.

    Returns the row's state afterwards (None when the row is gone with its task). A row
    redelivered or taken over meanwhile keeps its new course: only the attempt is added.
    """
    now = utcnow()
    with db.write() as session:
        row = session.get(Delivery, delivery_id, with_for_update=True)
        if row is None:
            return None
        row.attempts = [*(row.attempts or []), attempt]
        if row.claimed_by != owner:
            return row.state
        row.claimed_until = row.claimed_by = None
        if ok:
            row.state, row.next_attempt_at = "succeeded", None
            return row.state
        row.tries = (row.tries or 0) + 1
        schedule = settings.notify_retry_schedule
        if row.tries > len(schedule):
            row.state, row.next_attempt_at = "failed", None
        else:
            row.next_attempt_at = now + timedelta(seconds=schedule[row.tries - 1])
        return row.state


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
