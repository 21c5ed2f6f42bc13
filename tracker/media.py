"""Archive finished videos (and their thumbnails) while the upstream's links still work.

The upstream's links are presigned and expire within the hour, so a task that only
keeps its link loses its video by the next day. The worker calls `archive_due` each
pass; `tracker archive --missing` calls `archive_missing`.

- Files are `<task id>.mp4` and `<task id>.jpg` in the store (`storage`: the folder
  TRACKER_MEDIA_DIR, or the bucket TRACKER_MEDIA_URL); the database keeps the name only,
  so the folder can move and copies can move into a bucket.
- `download` streams into a temporary file renamed into place only when whole, through
  `netguard` (public addresses only, every redirect checked); for a bucket, that file is
  then uploaded and verified before the task counts as archived.
- An expired or failing link is retried with a fresh one from the upstream; a failed
  attempt backs off exponentially and gives up after MAX_ATTEMPTS, leaving `archive_error`.
- Only the media columns are written, never the task's state: archival is not a
  lifecycle change. A conditional UPDATE (the lease) keeps two workers off one task.
- Links are credentials: no URL ever reaches a log line or `archive_error`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from . import netguard, storage
from .db import Database
from .download import DOWNLOAD_DEADLINE, DownloadError, TooLarge, download
from .models import Task, utcnow
from .redact import redact
from .settings import Settings
from .upstream import Answer, LumaClient, UpstreamError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRY_BASE = 30.0
RETRY_MAX = 3600.0
# a claimed task is left alone this long: past the longest video + thumbnail downloads
MIN_LEASE = 2 * DOWNLOAD_DEADLINE + 60.0


def guard_for(settings: Settings) -> netguard.Guard:
    return netguard.Guard(allow_private=settings.media_allow_private)


def _has(store: storage.Store, name: str | None) -> bool:
    return bool(name) and store.stat(name) is not None


# -- one task ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    task_id: int
    upstream_id: str | None
    video_url: str | None
    thumbnail_url: str | None
    need_video: bool
    need_thumbnail: bool
    upstream: str = "proxy"


class _FreshLinks:
    """Links asked of the upstream for one attempt, each question asked at most once."""

    def __init__(self, client: LumaClient, upstream_id: str | None) -> None:
        self.client = client
        self.upstream_id = upstream_id
        self._answer: Answer | None = None

    def _query(self) -> Answer:
        if self._answer is None:
            self._answer = self.client.query(self.upstream_id or "")
        return self._answer

    def video(self) -> str | None:
        if not self.upstream_id:
            return None
        try:
            url = self.client.download_url(self.upstream_id)
            if url:
                return url
        except UpstreamError:  # not every reseller has the route; the query is the fallback
            pass
        try:
            return self._query().update.video_url
        except UpstreamError as exc:
            raise DownloadError(f"no fresh link: {exc.message}") from None

    def thumbnail(self) -> str | None:
        if not self.upstream_id:
            return None
        try:
            return self._query().update.thumbnail_url
        except UpstreamError:
            return None


def _fetch(
    stored: str | None,
    fresh: Callable[[], str | None],
    name: str,
    store: storage.Store,
    settings: Settings,
    guard: netguard.Guard,
) -> int:
    """Download into the store under `name`; a failure to store is a (retried) DownloadError."""
    try:
        with store.receive(name) as dest:
            return _fetch_to(stored, fresh, dest, settings, guard)
    except storage.StorageError as exc:
        raise DownloadError(exc.reason) from None


def _fetch_to(
    stored: str | None,
    fresh: Callable[[], str | None],
    dest: Path,
    settings: Settings,
    guard: netguard.Guard,
) -> int:
    """The stored link first; when it fails (expired, say), a fresh one from the upstream."""
    first: DownloadError | None = None
    if stored:
        try:
            return download(stored, dest, settings, guard)
        except TooLarge:
            raise
        except DownloadError as exc:
            first = exc
    try:
        url = fresh()
        if not url:
            raise first or DownloadError("the upstream gave no link")
        return download(url, dest, settings, guard)
    except DownloadError as exc:
        if first is None or exc is first:
            raise
        raise DownloadError(f"{first.reason}; then {exc.reason}", permanent=exc.permanent) from None


def _archive_one(
    db: Database, settings: Settings, client: LumaClient, guard: netguard.Guard, job: _Job
) -> bool:
    """Fetch what the task lacks and record the outcome; True when a file was archived."""
    store = storage.primary(settings)
    assert store is not None
    # only the API that made the task can hand out a fresh link for it
    same_api = job.upstream == client.dialect.name
    links = _FreshLinks(client, job.upstream_id if same_api else None)
    video_name = thumb_name = None
    try:
        if job.need_video:
            name = f"{job.task_id}.mp4"
            size = _fetch(job.video_url, links.video, name, store, settings, guard)
            video_name = name
            log.info("archived task %d video: %d bytes", job.task_id, size)
    except DownloadError as exc:
        _note_failure(db, job.task_id, exc)
        return False
    if job.need_thumbnail and (job.thumbnail_url or job.upstream_id):
        name = f"{job.task_id}.jpg"
        try:
            size = _fetch(job.thumbnail_url, links.thumbnail, name, store, settings, guard)
            thumb_name = name
            log.info("archived task %d thumbnail: %d bytes", job.task_id, size)
        except DownloadError as exc:  # the video is what matters; no retry for a thumbnail
            log.warning("task %d: thumbnail not archived: %s", job.task_id, redact(exc.reason))
    _note_success(db, job.task_id, video_name, thumb_name)
    return bool(video_name or thumb_name)


def _note_success(db: Database, task_id: int, video: str | None, thumbnail: str | None) -> None:
    with db.write() as session:
        task = session.get(Task, task_id)
        if task is None:
            return
        if video:
            task.media_path = video
            task.archived_at = utcnow()
        if thumbnail:
            task.thumbnail_path = thumbnail
        task.archive_error = None
        task.archive_attempts = 0
        task.next_archive_at = None


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter: 30 s, 1 min, 2 min, ... up to an hour."""
    return min(RETRY_MAX, RETRY_BASE * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.0)


def _note_failure(db: Database, task_id: int, exc: DownloadError) -> None:
    reason = redact(exc.reason)[:500]
    now = utcnow()
    with db.write() as session:
        task = session.get(Task, task_id)
        if task is None:
            return
        attempts = (task.archive_attempts or 0) + 1
        task.archive_attempts = attempts
        if exc.permanent or attempts >= MAX_ATTEMPTS:
            task.next_archive_at = None
            task.archive_error = (
                reason if exc.permanent else f"gave up after {attempts} attempts: {reason}"
            )
            log.warning("task %d: archival given up: %s", task_id, reason)
        else:
            wait = retry_delay(attempts)
            task.next_archive_at = now + timedelta(seconds=wait)
            task.archive_error = reason
            log.warning(
                "task %d: archival attempt %d failed: %s; next try in %.0f s",
                task_id,
                attempts,
                reason,
                wait,
            )


# -- choosing and claiming tasks --------------------------------------------------------------


def _claim(db: Database, settings: Settings, task_id: int, *, due_only: bool) -> _Job | None:
    """Take the task for one attempt with a conditional UPDATE; None when another has it.

    The lease is next_archive_at pushed past the download with archive_error cleared, which
    is how `archive_missing` tells a task in someone's hands from one waiting out a backoff.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=max(MIN_LEASE, settings.lease_seconds))
    conditions = [Task.id == task_id, Task.state == "completed"]
    if due_only:
        conditions.append(Task.next_archive_at <= now)
    else:
        conditions.append(
            or_(
                Task.next_archive_at.is_(None),
                Task.next_archive_at <= now,
                Task.archive_error.is_not(None),
            )
        )
    with db.write() as session:
        claimed = session.execute(
            update(Task)
            .where(*conditions)
            .values(next_archive_at=lease_until, archive_error=None)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        task = session.get(Task, task_id)
        assert task is not None
        names = (task.media_path, task.thumbnail_path)
        job = _Job(
            task_id=task.id,
            upstream_id=task.upstream_id,
            video_url=task.video_url,
            thumbnail_url=task.thumbnail_url,
            need_video=True,
            need_thumbnail=True,
            upstream=task.upstream,
        )
    # asked after the claim's commit: a bucket's HEAD must not hold the database's write lock
    store = storage.primary(settings)
    assert store is not None
    try:
        need_video, need_thumbnail = (not _has(store, name) for name in names)
    except storage.StorageError as exc:
        _note_failure(db, task_id, DownloadError(exc.reason))
        return None
    if not need_video and not (need_thumbnail and job.thumbnail_url):
        # already archived and stored: nothing to fetch, nothing to schedule
        with db.write() as session:
            session.execute(
                update(Task)
                .where(Task.id == task_id, Task.next_archive_at == lease_until)
                .values(next_archive_at=None)
                .execution_options(synchronize_session=False)
            )
        return None
    return replace(job, need_video=need_video, need_thumbnail=need_thumbnail)


def _run(
    db: Database,
    settings: Settings,
    client: LumaClient,
    ids: list[int],
    *,
    due_only: bool,
    guard: netguard.Guard | None,
) -> int:
    guard = guard or guard_for(settings)
    archived = 0
    for task_id in ids:
        job = _claim(db, settings, task_id, due_only=due_only)
        if job is None:
            continue
        try:
            archived += _archive_one(db, settings, client, guard, job)
        except SQLAlchemyError:
            raise  # the database is the caller's business (the worker survives restarts)
        except Exception as exc:  # one bad task must not stop the pass
            # the type only: exception texts from HTTP libraries may hold the link
            log.error("task %d: archival failed: %s", task_id, type(exc).__name__)
            _note_failure(db, task_id, DownloadError(f"unexpected error ({type(exc).__name__})"))
    return archived


def archive_due(
    db: Database,
    settings: Settings,
    client: LumaClient,
    *,
    limit: int = 2,
    guard: netguard.Guard | None = None,
) -> int:
    """The worker's pass: archive up to `limit` completed tasks whose turn has come.

    Blocks for the downloads; returns how many tasks got their video archived.
    """
    if not settings.archives:
        return 0
    now = utcnow()
    with db.read() as session:
        ids = list(
            session.scalars(
                select(Task.id)
                .where(Task.state == "completed", Task.next_archive_at <= now)
                .order_by(Task.next_archive_at, Task.id)
                .limit(limit)
            )
        )
    return _run(db, settings, client, ids, due_only=True, guard=guard)


def archive_missing(
    db: Database, settings: Settings, client: LumaClient, *, guard: netguard.Guard | None = None
) -> int:
    """Every completed task without an archived video in the store, whatever its schedule says.

    Also retries tasks that were given up on (the person running it is the retry policy),
    but leaves alone a task another process is downloading right now.
    """
    store = storage.primary(settings)
    if store is None:
        log.warning("TRACKER_MEDIA_DIR is empty: archival is off")
        return 0
    with db.read() as session:
        rows = session.execute(
            select(Task.id, Task.media_path).where(Task.state == "completed").order_by(Task.id)
        ).all()
    stored = store.names()  # one listing, not a question per task
    ids = [task_id for task_id, name in rows if not name or name not in stored]
    return _run(db, settings, client, ids, due_only=False, guard=guard)
