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
- The lease names its holder (`claimed_by`, a `heartbeat` row): a holder killed mid-download
  is recognised by its stale heartbeat within a minute, its task taken over and its
  temporary files removed, rather than the task waiting out the half-hour lease.
- Links are credentials: no URL ever reaches a log line or `archive_error`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from . import heartbeat, metrics, netguard, shutdown, storage
from .db import Database
from .download import DOWNLOAD_DEADLINE, DownloadError, TooLarge, download, remove_partials
from .heartbeat import Heartbeat
from .models import Task, utcnow
from .redact import redact
from .settings import Settings
from .upstream import Answer, LumaClient, UpstreamError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRY_BASE = 30.0
RETRY_MAX = 3600.0
# a claimed task is left alone this long: past the longest video + thumbnail downloads
# (unless its holder's heartbeat goes stale first)
MIN_LEASE = 2 * DOWNLOAD_DEADLINE + 60.0


def guard_for(settings: Settings) -> netguard.Guard:
    return netguard.Guard(allow_private=settings.media_allow_private)


def _has(store: storage.Store, name: str | None) -> bool:
    return bool(name) and store.stat(name) is not None


def remove_stale_partials(db: Database, settings: Settings, task_id: int | None = None) -> int:
    """Delete temporary download files (all, or one task's) that no live process is writing."""
    if not settings.media_dir:
        return 0
    prefix = "." if task_id is None else f".{task_id}."
    removed = remove_partials(
        Path(settings.media_dir),
        lambda: heartbeat.live_tags(db),
        untagged_after=MIN_LEASE,
        prefix=prefix,
    )
    if removed:
        log.info("removed %d partial download(s) left by a stopped process", len(removed))
    return len(removed)


def _taken_over(now: datetime) -> ColumnElement[bool]:
    """An archive lease (future next_archive_at, no error) whose holder's heartbeat is stale."""
    return and_(
        Task.next_archive_at > now,
        Task.archive_error.is_(None),
        heartbeat.held_by_dead(Task.claimed_by, now),
    )


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
    holder: str | None = None  # the lease's holder (a heartbeat id), when it has one
    tag: str = ""  # the holder's, on its temporary files


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
    tag: str,
) -> int:
    """Download into the store under `name`; a failure to store is a (retried) DownloadError.

    `tag` names this process on the temporary file, so that a sweep can tell when its
    writer died (`remove_stale_partials`).
    """
    try:
        with store.receive(name) as dest:
            return _fetch_to(stored, fresh, dest, settings, guard, tag)
    except storage.StorageError as exc:
        raise DownloadError(exc.reason) from None


def _fetch_to(
    stored: str | None,
    fresh: Callable[[], str | None],
    dest: Path,
    settings: Settings,
    guard: netguard.Guard,
    tag: str,
) -> int:
    """The stored link first; when it fails (expired, say), a fresh one from the upstream."""
    first: DownloadError | None = None
    if stored:
        try:
            return download(stored, dest, settings, guard, tag=tag)
        except TooLarge:
            raise
        except DownloadError as exc:
            first = exc
    try:
        url = fresh()
        if not url:
            raise first or DownloadError("the upstream gave no link")
        return download(url, dest, settings, guard, tag=tag)
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
            size = _fetch(job.video_url, links.video, name, store, settings, guard, job.tag)
            video_name = name
            metrics.archived_bytes(size)
            log.info("archived task %d video: %d bytes", job.task_id, size)
    except DownloadError as exc:
        _note_failure(db, job.task_id, exc, holder=job.holder)
        return False
    if job.need_thumbnail and (job.thumbnail_url or job.upstream_id):
        name = f"{job.task_id}.jpg"
        try:
            size = _fetch(job.thumbnail_url, links.thumbnail, name, store, settings, guard, job.tag)
            thumb_name = name
            metrics.archived_bytes(size)
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


def _give_back(db: Database, task_id: int, holder: str | None) -> None:
    """A download abandoned by a shutdown: due again at once, for whichever worker is next.

    Not a failed attempt (nothing is counted against the task); only this holder's lease.
    """
    log.info("task %d: archival abandoned (stopping); its lease is given back", task_id)
    with db.write() as session:
        session.execute(
            update(Task)
            .where(Task.id == task_id, Task.claimed_by == holder, Task.state == "completed")
            .values(next_archive_at=utcnow(), claimed_by=None)
            .execution_options(synchronize_session=False)
        )


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter: 30 s, 1 min, 2 min, ... up to an hour."""
    return min(RETRY_MAX, RETRY_BASE * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.0)


def _note_failure(
    db: Database, task_id: int, exc: DownloadError, *, holder: str | None = None
) -> None:
    reason = redact(exc.reason)[:500]
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


def _claim(
    db: Database, settings: Settings, task_id: int, *, due_only: bool, holder: Heartbeat | None
) -> _Job | None:
    """Take the task for one attempt with a conditional UPDATE; None when another has it.

    The lease is next_archive_at pushed past the download with archive_error cleared, which
    is how `archive_missing` tells a task in someone's hands from one waiting out a backoff;
    claimed_by names the holder, so that a dead one's lease is taken over.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=max(MIN_LEASE, settings.lease_seconds))
    conditions = [Task.id == task_id, Task.state == "completed"]
    if due_only:
        conditions.append(or_(Task.next_archive_at <= now, _taken_over(now)))
    else:
        conditions.append(
            or_(
                Task.next_archive_at.is_(None),
                Task.next_archive_at <= now,
                Task.archive_error.is_not(None),
                _taken_over(now),
            )
        )
    # only a registered holder's name goes on the lease: an unknown one is never taken for dead
    owner = holder.id if holder is not None and holder.registered else None
    with db.write() as session:
        claimed = session.execute(
            update(Task)
            .where(*conditions)
            .values(next_archive_at=lease_until, archive_error=None, claimed_by=owner)
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
            holder=owner,
            tag=heartbeat.file_tag(owner) if owner else "",
        )
    # asked after the claim's commit: a bucket's HEAD must not hold the database's write lock
    store = storage.primary(settings)
    assert store is not None
    try:
        need_video, need_thumbnail = (not _has(store, name) for name in names)
    except storage.StorageError as exc:
        _note_failure(db, task_id, DownloadError(exc.reason), holder=job.holder)
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
    holder: Heartbeat | None,
) -> int:
    guard = guard or guard_for(settings)
    archived = 0
    for task_id in ids:
        job = _claim(db, settings, task_id, due_only=due_only, holder=holder)
        if job is None:
            continue
        if holder is not None:
            holder.claimed(1)
        try:
            remove_stale_partials(db, settings, task_id)  # a dead holder's, say
            archived += _archive_one(db, settings, client, guard, job)
        except SQLAlchemyError:
            raise  # the database is the caller's business (the worker survives restarts)
        except shutdown.Abandoned:
            _give_back(db, task_id, job.holder)
            break
        except Exception as exc:  # one bad task must not stop the pass
            # the type only: exception texts from HTTP libraries may hold the link
            log.error("task %d: archival failed: %s", task_id, type(exc).__name__)
            failure = DownloadError(f"unexpected error ({type(exc).__name__})")
            _note_failure(db, task_id, failure, holder=job.holder)
    return archived


def archive_due(
    db: Database,
    settings: Settings,
    client: LumaClient,
    *,
    limit: int = 2,
    guard: netguard.Guard | None = None,
    holder: Heartbeat | None = None,
) -> int:
    """The worker's pass: archive up to `limit` completed tasks whose turn has come.

    Tasks a dead holder was downloading come first: their links have waited longest.
    Blocks for the downloads; returns how many tasks got their video archived.
    """
    if not settings.archives:
        return 0
    now = utcnow()
    with db.read() as session:
        ids = list(
            session.scalars(
                select(Task.id)
                .where(
                    Task.state == "completed", or_(Task.next_archive_at <= now, _taken_over(now))
                )
                .order_by(case((Task.next_archive_at > now, 0), else_=1), Task.next_archive_at)
                .order_by(Task.id)
                .limit(limit)
            )
        )
    return _run(db, settings, client, ids, due_only=True, guard=guard, holder=holder)


def archive_missing(
    db: Database,
    settings: Settings,
    client: LumaClient,
    *,
    guard: netguard.Guard | None = None,
    holder: Heartbeat | None = None,
) -> int:
    """Every completed task without an archived video in the store, whatever its schedule says.

    Also retries tasks that were given up on (the person running it is the retry policy),
    but leaves alone a task another live process is downloading right now; a dead one's
    (stale heartbeat) it takes, and removes the partial files nobody is writing any more.
    """
    store = storage.primary(settings)
    if store is None:
        log.warning("TRACKER_MEDIA_DIR is empty: archival is off")
        return 0
    remove_stale_partials(db, settings)
    with db.read() as session:
        rows = session.execute(
            select(Task.id, Task.media_path).where(Task.state == "completed").order_by(Task.id)
        ).all()
    stored = store.names()  # one listing, not a question per task
    ids = [task_id for task_id, name in rows if not name or name not in stored]
    return _run(db, settings, client, ids, due_only=False, guard=guard, holder=holder)
