"""The tables: tasks, their event history, the per-state counters, sign-ins, the upstream
account, worker processes and webhook deliveries.

Only `tracker/tasks/` writes a task's row (its state as `machine.decide` says, through
`store` or the callback writes); everything else reads it.
Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy import false as sa_false
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tracker.db import utcnow as utcnow  # the models' clock, as every module reads it
from tracker.sql import UTCDateTime
from tracker.tasks.states import FINAL_STATES, TaskState


class Base(DeclarativeBase):
    pass


# what a task asks of the upstream (`upstream.operations`: one operation each)
KINDS = ("generate", "extend", "upscale", "audio", "modify", "reframe", "image")
# the kinds whose upstream id is their own: an upscale or added audio may answer with its
# source's, so an id is resolved (import, chain, a source) to the oldest task of these kinds
ORIGINALS = ("generate", "extend", "image")


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upstream_id: Mapped[str | None] = mapped_column(String(128), index=True)
    source_task_id: Mapped[str | None] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[TaskState] = mapped_column(String(16))  # a TaskState, stored as its name
    # the API the task was sent with (LUMA_API_FLAVOR then): only that dialect's worker follows it
    upstream: Mapped[str] = mapped_column(String(16), default="proxy", server_default="proxy")
    # the upstream account that sent it (its generation exists there only); None while a new
    # generation waits for whichever account has room, set when one takes it
    account: Mapped[str | None] = mapped_column(String(32))
    # named at submit (the body's `account`, or its source's): it waits for that one only
    account_pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    upstream_state: Mapped[str | None] = mapped_column(String(32))

    user_prompt: Mapped[str] = mapped_column(Text)
    expand_prompt: Mapped[bool | None] = mapped_column(Boolean)
    image_url: Mapped[str | None] = mapped_column(Text)
    image_end_url: Mapped[str | None] = mapped_column(Text)
    # generate-only fields (aspect_ratio, loop, resolution, duration, model_name)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    video_url: Mapped[str | None] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # rejected because a create may or may not have happened upstream (never resent on our own;
    # the upstream's word may still revive it). failure_reason says so in words.
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # such a create was last looked for in the account's list of generations then (luma dialect)
    looked_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # how far along the upstream says it is (0-100) and its own wait guess, where it gives them
    progress: Mapped[int | None] = mapped_column(Integer)
    estimate_wait_seconds: Mapped[int | None] = mapped_column(Integer)

    # sha256 of the per-task callback token; the token itself is never stored
    callback_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # scheduling: when the worker should next look (dispatch a queued task, query a quiet one)
    last_news_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # queries in a row that brought no change: the exponent of the query backoff
    quiet_polls: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))

    # archival of the finished video
    media_path: Mapped[str | None] = mapped_column(Text)
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archive_attempts: Mapped[int] = mapped_column(Integer, default=0)
    archive_error: Mapped[str | None] = mapped_column(Text)
    next_archive_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # the caller's own webhook target for this task (checked by the address guard at submit)
    notify_url: Mapped[str | None] = mapped_column(Text)

    events: Mapped[list[TaskEvent]] = relationship(
        back_populates="task", order_by="TaskEvent.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_tasks_state_id", "state", "id"),
        Index("ix_tasks_state_next_check_at", "state", "next_check_at"),
        # the dashboard's banner counts the other dialect's unfinished tasks through it
        Index("ix_tasks_upstream_state", "upstream", "state"),
        # each account's in-flight count and its queue
        Index("ix_tasks_account_state", "account", "state"),
    )

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class TaskEvent(Base):
    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    state_before: Mapped[str | None] = mapped_column(String(16))
    state_after: Mapped[str | None] = mapped_column(String(16))
    # a short human line: "not understood", "upstream refused: ...", "resent as attempt 2"
    note: Mapped[str | None] = mapped_column(Text)
    # the payload as received (secrets removed), as JSON text when it was JSON
    payload: Mapped[str | None] = mapped_column(Text)
    # sha256 of source + payload, on upstream inputs only: identical deliveries are recorded
    # once (INSERT ... ON CONFLICT DO NOTHING on the unique index; NULLs never collide)
    fingerprint: Mapped[str | None] = mapped_column(String(64))

    task: Mapped[Task] = relationship(back_populates="events")

    __table_args__ = (
        Index("ix_task_events_task_id_fingerprint", "task_id", "fingerprint", unique=True),
    )


class StateCount(Base):
    """How many tasks are in each state, kept by `rows.moved` so the dashboard never counts rows."""

    __tablename__ = "state_counts"

    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class SignIn(Base):
    """A dashboard sign-in, kept server-side so that logging out ends it for good.

    The session cookie names it (its id; only the id's SHA-256 is stored here); a cookie
    whose row is gone or past `expires_at` is signed out, whatever its own signature says.
    """

    __tablename__ = "sign_ins"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Account(Base):
    """An upstream account as the database knows it (its key is never stored: the environment's).

    Shared by every process: whether it takes work (`enabled`: a refused key disables it, with
    the reason and the time), the upstream's "not now" (`paused_until`), and what the worker
    last read of its credit balance (`upstream.accounts.refresh`, at most once a minute; the
    web only reads it, so no page waits on the upstream).
    """

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    upstream: Mapped[str] = mapped_column(String(16))  # its dialect
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    credit_balance: Mapped[int | None] = mapped_column(BigInteger)  # US cents
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it was read
    # the next read may start then: a claim, so several workers ask once a minute in all
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class AccountDay(Base):
    """Creates an account sent on one UTC day (accepted or outcome unknown), for its daily
    limit: counted in the claim's transaction, so racing submits never pass the limit."""

    __tablename__ = "account_days"

    account: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    creates: Mapped[int] = mapped_column(Integer, default=0)


class WorkerBeat(Base):
    """A worker process and its heartbeat: who holds leases, and whether it is still alive.

    `id` is the name the process writes in `tasks.claimed_by`, so a lease whose holder has
    gone quiet (`tracker.tasks.heartbeats.STALE_AFTER`) is recognised without waiting for it to
    expire. A clean stop deletes the row; a killed process's row stays, stale.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # claims taken since the start: dispatches, queries and archives
    tasks_claimed: Mapped[int] = mapped_column(Integer, default=0)
    # the upstream said "not now" (Retry-After): no queries or creates until then
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


DELIVERY_STATES = ("pending", "succeeded", "failed")


class Delivery(Base):
    """One webhook event for one target: sent by a worker until a 2xx, or marked failed.

    Written in the transaction that changed the task (`tracker.tasks.webhooks.enqueue`), so an
    event is never lost and never sent from inside a request. `webhook_id` is the same on
    every attempt and redelivery. `payload` is the body without its media links, which are
    signed afresh at each attempt. `claimed_until`/`claimed_by` are the sending lease.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    webhook_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(Text)
    # "global" (TRACKER_NOTIFY_URL, the operator's own) or "task" (notify_url: guarded)
    target_kind: Mapped[str] = mapped_column(String(8))
    payload: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # attempts in this round (the index into TRACKER_NOTIFY_RETRY_SCHEDULE); a redelivery resets it
    tries: Mapped[int] = mapped_column(Integer, default=0)
    # the last 100 attempts (deliveries.MAX_ATTEMPTS): [{"at", "status", "latency_ms", "response"}]
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))

    task: Mapped[Task] = relationship()

    __table_args__ = (Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),)


# Search structures made by hand in migration 0002, different on each database (SQLite's FTS5
# table, its shadow tables and triggers; PostgreSQL's generated tsvector column, its GIN index
# and pattern-ops indexes). The models cannot describe them, so migrations/env.py leaves objects
# with these names out of `alembic check`.
SEARCH_OBJECT_PREFIXES = ("tasks_fts", "ix_tasks_search_", "search_vector")


def is_search_object(name: str | None) -> bool:
    return bool(name) and str(name).startswith(SEARCH_OBJECT_PREFIXES)
