"""Dispatch slots and query claims: which tasks this process may send or query now, for
which account (`Holder`: an upstream account's dialect and caps, keyed by the account).

A claim is written in the transaction that picks the rows: PostgreSQL's FOR UPDATE SKIP
LOCKED lets claimers pass each other, SQLite's BEGIN IMMEDIATE serializes them. A lease
(claimed_until, claimed_by) names its holder's heartbeat, so a holder that died is passed
over as soon as its heartbeat goes stale, not only when the lease runs out.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracker.db import Database
from tracker.redact import CALLBACK_TOKEN_BYTES
from tracker.settings import Settings
from tracker.tasks import heartbeats, schedule, store
from tracker.tasks.models import Account, AccountDay, Task, utcnow
from tracker.tasks.states import (
    IN_FLIGHT_STATES,
    QUERIED_STATES,
    TIMEABLE_STATES,
    Claim,
    GiveUp,
    TaskState,
    TimeOut,
)

# a lock number of our own for PostgreSQL's advisory lock around slot accounting
SLOT_LOCK = 0x4C554D41
Job = list[tuple[int, str]]  # (task id, upstream id) pairs asked about together


class Holder(Protocol):
    """The account a claim is for (upstream.accounts.Account is one): its name (on the tasks
    it sends), the dialect it speaks, and its caps."""

    @property
    def name(self) -> str: ...
    @property
    def dialect(self) -> str: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def submits_per_minute(self) -> int: ...
    @property
    def daily_limit(self) -> int | None: ...


def mine(account: Holder) -> Any:
    """The account's tasks: those it sent or that wait for it by name, and the new
    generations of its dialect no account has taken yet."""
    return or_(
        and_(Task.account == account.name, Task.upstream == account.dialect),
        and_(Task.account.is_(None), Task.upstream == account.dialect),
    )


def day_of(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


def _count(session: Session, query: Any) -> int:
    return session.scalar(select(func.count()).select_from(Task).where(*query)) or 0


# -- dispatch slots ---------------------------------------------------------------------------


def slots_free(session: Session, account: Holder, now: datetime) -> int:
    """Free create slots of this account: its caps less what it has in flight and sent in the
    last minute, and what is left of its day; none while it is disabled or paused."""
    row = session.get(Account, account.name)
    if row is not None and not (row.enabled and (row.paused_until or now) <= now):
        return 0
    sent = and_(Task.account == account.name, Task.upstream == account.dialect)  # a switch
    in_flight = _count(session, (sent, Task.state.in_(IN_FLIGHT_STATES)))
    recent = _count(session, (sent, Task.submitted_at >= now - timedelta(seconds=60)))
    free = min(account.max_in_flight - in_flight, account.submits_per_minute - recent)
    if account.daily_limit is not None:
        today = session.get(AccountDay, (account.name, day_of(now)))
        free = min(free, account.daily_limit - (today.creates if today else 0))
    return max(0, free)


def not_sent(db: Database, task_id: int, account: str, day: str, *, elsewhere: bool) -> None:
    """A create that was not made after all (not sent, or refused: not charged) is no create
    of the account's day; `elsewhere`: its account cannot take it (a refused key), so a task
    not pinned to it waits for whichever account has room."""
    with db.write() as session:
        count_create(session, account, day, by=-1)
        if elsewhere:
            session.execute(
                update(Task)
                .where(Task.id == task_id, Task.account_pinned.is_(False))
                .where(Task.state == TaskState.QUEUED)
                .values(account=None)
                .execution_options(synchronize_session=False)
            )


def count_create(session: Session, account: str, day: str, by: int = 1) -> None:
    """A create sent (or, `by=-1`, one that turned out not sent or refused: not a create of
    the day). In the claim's transaction, under the slot lock: racing claims never pass it."""
    today = session.get(AccountDay, (account, day), with_for_update=True)
    if today is None:
        session.add(AccountDay(account=account, day=day, creates=max(0, by)))
    else:
        today.creates = max(0, today.creates + by)


def lock_slots(session: Session, db: Database) -> None:
    """Serialize slot accounting across processes (SQLite's BEGIN IMMEDIATE already does)."""
    if db.is_postgres:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SLOT_LOCK})


def claim_for_dispatch(
    db: Database,
    settings: Settings,
    task_id: int | None = None,
    limit: int = 1,
    *,
    account: Holder,
    owner: str | None = None,
) -> list[tuple[int, str]]:
    """Move up to `limit` queued tasks (oldest first, or the one given) to `submitting`.

    Returns (task id, callback token) pairs. The token exists only in memory and in the
    URL sent upstream; the database keeps its hash. `owner` is the claiming worker's
    heartbeat id: should it die mid-send, the task is found sooner (still never resent).
    """
    now = utcnow()
    claimed: list[tuple[int, str]] = []
    with db.write() as session:
        lock_slots(session, db)
        free = min(limit, slots_free(session, account, now))
        if free <= 0:
            return []
        query = select(Task).where(
            Task.state == TaskState.QUEUED, Task.next_check_at <= now, mine(account)
        )
        if task_id is not None:
            query = query.where(Task.id == task_id)
        # row locks too: a sweep (timeout) that got there first is not overwritten
        query = query.order_by(Task.id).limit(free).with_for_update(skip_locked=True)
        for task in session.scalars(query):
            token = secrets.token_urlsafe(CALLBACK_TOKEN_BYTES)
            lease = schedule.lease(settings.lease_seconds, owner, now)
            # no callback URL (PUBLIC_BASE_URL unset): no hash, as nothing can call back
            token_hash = store.hash_token(token) if settings.public_base_url else None
            task.account = account.name  # its generation will exist there only
            store.apply(session, None, task, Claim(token_hash, **lease))
            count_create(session, account.name, day_of(now))
            claimed.append((task.id, token))
    return claimed


# -- poll claims ------------------------------------------------------------------------------


def queryable(now: datetime, account: Holder) -> tuple[Any, ...]:
    """Tasks a worker may query for this account: those it sent (no other account, nor
    another API, can answer for them)."""
    return (
        Task.state.in_(QUERIED_STATES),
        Task.account == account.name,
        Task.upstream == account.dialect,
        Task.upstream_id.is_not(None),
        or_(
            Task.claimed_until.is_(None),
            Task.claimed_until < now,
            heartbeats.held_by_dead(Task.claimed_by, now),
        ),
    )


def claim_queries(
    db: Database, settings: Settings, owner: str, cutoff: datetime, limit: int, *, account: Holder
) -> Job:
    """Lease up to `limit` tasks due for a query by `cutoff`, most overdue first."""
    now = utcnow()
    query = select(Task.id, Task.upstream_id).where(
        *queryable(now, account), Task.next_check_at <= cutoff
    )
    with db.write() as session:
        rows = session.execute(
            query.order_by(Task.next_check_at, Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            session.execute(
                update(Task)
                .where(Task.id.in_([row.id for row in rows]))
                .values(schedule.lease(settings.lease_seconds, owner, now))
                .execution_options(synchronize_session=False)
            )
    return [(row.id, row.upstream_id) for row in rows]


def release_queries(db: Database, owner: str, job: Job | None = None) -> None:
    """Give back `owner`'s leases on tasks it will not query (all of them when None)."""
    query = update(Task).where(
        Task.claimed_by == owner, Task.claimed_until.is_not(None), Task.state.in_(QUERIED_STATES)
    )
    if job is not None:
        query = query.where(Task.id.in_([task_id for task_id, _ in job]))
    with db.write() as session:
        session.execute(
            query.values(schedule.released()).execution_options(synchronize_session=False)
        )


def next_query_due(db: Database, account: Holder) -> datetime | None:
    """When the next query falls due (None: nothing to follow)."""
    now = utcnow()
    with db.read() as session:
        return session.scalar(select(func.min(Task.next_check_at)).where(*queryable(now, account)))


# -- outgoing webhook deliveries (issue 11): their claim, lease and release go here -----------


# -- the account row's turn to read the credit balance (one process, once a minute) -------


def claim_credit_check(db: Database, account: Holder, now: datetime) -> bool:
    """Take this minute's turn to ask about the account, or say another process has it."""
    try:
        with db.write() as session:
            row = session.get(Account, account.name, with_for_update=True)
            if row is None:
                row = Account(name=account.name, upstream=account.dialect)
                session.add(row)
            elif row.next_check_at is not None and row.next_check_at > now:
                return False
            row.next_check_at = schedule.after(schedule.CREDIT_CHECK_INTERVAL, now)
    except IntegrityError:  # another worker made the row first: its turn
        return False
    return True


# -- the recovery sweeps: a send whose process died, tasks past TRACKER_TASK_TIMEOUT --------
# Each finds its tasks with row locks that skip rows another transaction holds (they wait
# for the next pass: never a lock cycle) and hands them to the store for the move.


def recover_interrupted_submissions(db: Database, limit: int = 500) -> int:
    """A task left in `submitting` by a crash mid-send: its outcome is unknown.

    Found when its lease has passed, or sooner when its sender's heartbeat went stale. Either
    way it is never resent on our own: the create may have happened (and been paid for). An
    answer that still arrives (a sender only thought dead) revives it (`store.record_answer`).
    """
    now = utcnow()
    gone = or_(Task.claimed_until < now, heartbeats.held_by_dead(Task.claimed_by, now))
    with db.write() as session:
        tasks = session.scalars(
            select(Task)
            .where(Task.state == TaskState.SUBMITTING, gone)
            .order_by(Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for task in tasks:
            store.apply(session, None, task, GiveUp("the process sending it stopped mid-request"))
    return len(tasks)


def time_out_overdue(db: Database, settings: Settings, limit: int = 500, *, account: Holder) -> int:
    """Tasks with no final state TRACKER_TASK_TIMEOUT seconds after creation become timed_out.

    A later callback or a manual poll can still complete them (see `tasks.machine`).
    """
    cutoff = utcnow() - timedelta(seconds=settings.task_timeout)
    with db.write() as session:
        tasks = session.scalars(
            select(Task)
            .where(
                Task.state.in_(TIMEABLE_STATES),
                # another account's tasks wait for a worker that can ask about them
                mine(account),
                # the clock starts with the current attempt (a resend starts a new one)
                func.coalesce(Task.submitted_at, Task.created_at) < cutoff,
            )
            .order_by(Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for task in tasks:
            store.apply(session, settings, task, TimeOut(settings.task_timeout))
    return len(tasks)
