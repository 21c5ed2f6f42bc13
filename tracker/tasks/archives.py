"""Archive claims: which finished video a process may download now, and when to retry it.

The lease is `next_archive_at` pushed past the download with `archive_error` cleared, which
is how `flows.archive.archive_missing` tells a task in someone's hands from one waiting out
a backoff; `claimed_by` names the holder, so that a dead one's lease is taken over (its
heartbeat went stale) rather than waited out. A failed attempt backs off (`schedule.ARCHIVE`)
and is given up after `schedule.ARCHIVE_MAX_ATTEMPTS`. Only media columns are written here,
never the task's state: archival is not a move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from tracker.db import Database, rowcount
from tracker.settings import Settings
from tracker.tasks import heartbeats, webhooks
from tracker.tasks import schedule as timing
from tracker.tasks.models import Task, utcnow
from tracker.tasks.states import TaskState

log = logging.getLogger(__name__)

# a claimed task is left alone this long: past the longest video + thumbnail downloads
# (unless its holder's heartbeat goes stale first)
MIN_LEASE = 2 * timing.DOWNLOAD_DEADLINE + 60.0


@dataclass(frozen=True)
class ArchiveClaim:
    """A task taken for one archive attempt: what the download needs to know."""

    task_id: int
    upstream_id: str | None
    video_url: str | None
    thumbnail_url: str | None
    media_path: str | None
    thumbnail_path: str | None
    upstream: str
    account: str | None
    kind: str
    # another task has the same upstream id (an upscale or added audio answers with its
    # source's): the upstream's current asset may be the other task's, so no fresh link
    shared: bool
    holder: str | None  # the lease's holder (a heartbeat id), when it has one
    lease_until: datetime


def taken_over(now: datetime) -> ColumnElement[bool]:
    """An archive lease (future next_archive_at, no error) whose holder's heartbeat is stale."""
    return and_(
        Task.next_archive_at > now,
        Task.archive_error.is_(None),
        heartbeats.held_by_dead(Task.claimed_by, now),
    )


def due(db: Database, limit: int) -> list[int]:
    """Completed tasks whose archive turn has come; a dead holder's first (oldest links)."""
    now = utcnow()
    with db.read() as session:
        return list(
            session.scalars(
                select(Task.id)
                .where(
                    Task.state == TaskState.COMPLETED,
                    or_(Task.next_archive_at <= now, taken_over(now)),
                )
                .order_by(case((Task.next_archive_at > now, 0), else_=1), Task.next_archive_at)
                .order_by(Task.id)
                .limit(limit)
            )
        )


def claim(
    db: Database, settings: Settings, task_id: int, *, due_only: bool, owner: str | None
) -> ArchiveClaim | None:
    """Take the task for one attempt with a conditional UPDATE; None when another has it.

    `due_only=False` (archive --missing) also takes tasks waiting out a backoff or given up.
    `owner` must be a registered heartbeat's id (an unknown one is never taken for dead).
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=max(MIN_LEASE, settings.lease_seconds))
    conditions = [Task.id == task_id, Task.state == TaskState.COMPLETED]
    if due_only:
        conditions.append(or_(Task.next_archive_at <= now, taken_over(now)))
    else:
        conditions.append(
            or_(
                Task.next_archive_at.is_(None),
                Task.next_archive_at <= now,
                Task.archive_error.is_not(None),
                taken_over(now),
            )
        )
    with db.write() as session:
        claimed = session.execute(
            update(Task)
            .where(*conditions)
            .values(next_archive_at=lease_until, archive_error=None, claimed_by=owner)
            .execution_options(synchronize_session=False)
        )
        if rowcount(claimed) != 1:
            return None
        other = aliased(Task)
        shared = exists().where(other.upstream_id == Task.upstream_id, other.id != Task.id)
        row = session.execute(
            select(
                Task.upstream_id,
                Task.video_url,
                Task.thumbnail_url,
                Task.media_path,
                Task.thumbnail_path,
                Task.upstream,
                Task.account,
                Task.kind,
                shared,
            ).where(Task.id == task_id)
        ).one()
    return ArchiveClaim(task_id, *row, holder=owner, lease_until=lease_until)


def nothing_to_do(db: Database, job: ArchiveClaim) -> None:
    """Already archived and stored: drop the lease, schedule nothing."""
    with db.write() as session:
        session.execute(
            update(Task)
            .where(Task.id == job.task_id, Task.next_archive_at == job.lease_until)
            .values(next_archive_at=None)
            .execution_options(synchronize_session=False)
        )


def succeeded(db: Database, task_id: int, video: str | None, thumbnail: str | None) -> None:
    """Store the archived names; no more attempts."""
    with db.write() as session:
        task = session.get(Task, task_id)
        if task is None:
            return
        if video:
            task.media_path = video
            task.archived_at = utcnow()
            webhooks.enqueue(session, task, "archived")  # task.archived, in this transaction
        if thumbnail:
            task.thumbnail_path = thumbnail
        task.archive_error = None
        task.archive_attempts = 0
        task.next_archive_at = None


def failed(db: Database, task_id: int, reason: str, *, permanent: bool, holder: str | None) -> None:
    """Back the task off, or give up (a permanent failure, or ARCHIVE_MAX_ATTEMPTS reached)."""
    now = utcnow()
    with db.write() as session:
        task = session.get(Task, task_id)
        if task is None:
            return
        if holder and task.claimed_by != holder:
            # taken over while this process looked dead: the new holder's attempt decides
            log.warning("task %d: archival attempt abandoned: %s", task_id, reason)
            return
        attempts = (task.archive_attempts or 0) + 1
        task.archive_attempts = attempts
        if permanent or attempts >= timing.ARCHIVE_MAX_ATTEMPTS:
            task.next_archive_at = None
            task.archive_error = (
                reason if permanent else f"gave up after {attempts} attempts: {reason}"
            )
            log.warning("task %d: archival given up: %s", task_id, reason)
        else:
            wait = timing.archive_delay(attempts)
            task.next_archive_at = now + timedelta(seconds=wait)
            task.archive_error = reason
            log.warning(
                "task %d: archival attempt %d failed: %s; next try in %.0f s",
                *(task_id, attempts, reason, wait),
            )


def give_back(db: Database, task_id: int, holder: str | None) -> None:
    """A download abandoned by a shutdown: due again at once, for whichever worker is next.

    Not a failed attempt (nothing is counted against the task); only this holder's lease.
    """
    with db.write() as session:
        session.execute(
            update(Task)
            .where(Task.id == task_id, Task.claimed_by == holder, Task.state == TaskState.COMPLETED)
            .values(next_archive_at=utcnow(), claimed_by=None)
            .execution_options(synchronize_session=False)
        )
