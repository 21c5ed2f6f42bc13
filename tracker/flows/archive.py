"""Archive finished videos (and their thumbnails) while the upstream's links still work.

The upstream's links are presigned and expire within the hour, so a task that only
keeps its link loses its video by the next day. The worker calls `archive_due` each
pass; `tracker archive --missing` calls `archive_missing`.

- Files are `<task id>.mp4` and `<task id>.jpg` (an image task's result: `.jpg` or `.png`)
  in the store (`storage`: the folder TRACKER_MEDIA_DIR, or the bucket TRACKER_MEDIA_URL);
  the database keeps the name only, so the folder can move and copies can move into a bucket.
- `download` streams into a temporary file renamed into place only when whole, through
  `netguard` (public addresses only, every redirect checked); for a bucket, that file is
  then uploaded and verified before the task counts as archived.
- An expired or failing link is retried with a fresh one from the upstream (`download.fetch`);
  a failed attempt backs off exponentially, and after MAX_ATTEMPTS leaves `archive_error`.
- Only the media columns are written (by `tasks.archives`), never the task's state: archival
  is not a move. A conditional UPDATE (the lease) keeps two workers off one task.
- The lease names its holder (`claimed_by`: `tasks.heartbeats`): a holder killed mid-download
  is known by its stale heartbeat within a minute, its task taken over and its temporary files
  removed; a job the database failed under gives its lease back once it answers again.
- Links are credentials: no URL ever reaches a log line or `archive_error`.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from tracker import metrics, shutdown, storage
from tracker.db import Database
from tracker.redact import redact
from tracker.settings import Settings
from tracker.storage import netguard
from tracker.storage.download import DownloadError, FreshLinks, fetch, remove_partials
from tracker.storage.stores import StorageError, Store
from tracker.tasks import archives, heartbeats
from tracker.tasks import schedule as timing
from tracker.tasks.heartbeats import Heartbeat
from tracker.tasks.models import Task
from tracker.upstream import accounts
from tracker.upstream.client import LumaClient

log = logging.getLogger(__name__)

# the claims and their backoff are the task domain's (tasks.archives, tasks.schedule)
MAX_ATTEMPTS = timing.ARCHIVE_MAX_ATTEMPTS
RETRY_BASE = timing.ARCHIVE.base
MIN_LEASE = archives.MIN_LEASE
HAND_BACK_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # s: a restarting database's time


def guard_for(settings: Settings) -> netguard.Guard:
    return netguard.Guard(allow_private=settings.media_allow_private)


def image_type(url: str | None) -> str:
    """An image's file type from its link: `png` when it says so, else `jpg` (Luma's
    default format)."""
    path = urlsplit(url or "").path.lower()
    return "png" if path.endswith(".png") else "jpg"


def _has(store: Store, name: str | None) -> bool:
    return bool(name) and store.stat(name) is not None


def remove_stale_partials(db: Database, settings: Settings, task_id: int | None = None) -> int:
    """Delete temporary download files (all, or one task's) that no live process is writing."""
    if not settings.media_dir:
        return 0
    prefix = "." if task_id is None else f".{task_id}."
    removed = remove_partials(
        Path(settings.media_dir),
        lambda: heartbeats.live_tags(db),
        untagged_after=MIN_LEASE,
        prefix=prefix,
    )
    if removed:
        log.info("removed %d partial download(s) left by a stopped process", len(removed))
    return len(removed)


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
    account: str | None = None  # the account that made it: only its key can ask for links
    image: bool = False  # an image task: its result (`video_url` here) is the image
    shared: bool = False  # another task has its upstream id: only its own link is its
    holder: str | None = None  # the lease's holder (a heartbeat id), when it has one
    tag: str = ""  # the holder's, on its temporary files


def _archive_one(
    db: Database, settings: Settings, client: LumaClient, guard: netguard.Guard, job: _Job
) -> bool:
    """Fetch what the task lacks and record the outcome; True when a file was archived."""
    store = storage.primary(settings)
    if store is None:
        raise RuntimeError("archival is off (no TRACKER_MEDIA_DIR) but a claim was made")
    # only the account (and API) that made the task can hand out a fresh link for it
    try:
        client = accounts.client_of(settings, job.account, client)
    except LookupError:  # an account gone from the settings: the stored link only
        job = replace(job, upstream="")
    same_api = job.upstream == client.dialect.name and not job.shared
    links = FreshLinks(client, job.upstream_id if same_api else None)
    video_name = thumb_name = None
    try:
        if job.need_video:
            name = (
                f"{job.task_id}.{image_type(job.video_url)}" if job.image else f"{job.task_id}.mp4"
            )
            fresh = links.thumbnail if job.image else links.video
            size = fetch(job.video_url, fresh, name, store, settings, guard, job.tag)
            video_name = name
            metrics.archived_bytes(size)
            log.info("archived task %d video: %d bytes", job.task_id, size)
    except DownloadError as exc:
        _note_failure(db, job.task_id, exc, holder=job.holder)
        return False
    if job.need_thumbnail and (job.thumbnail_url or job.upstream_id):
        name = f"{job.task_id}.jpg"
        try:
            size = fetch(job.thumbnail_url, links.thumbnail, name, store, settings, guard, job.tag)
            thumb_name = name
            metrics.archived_bytes(size)
            log.info("archived task %d thumbnail: %d bytes", job.task_id, size)
        except DownloadError as exc:  # the video is what matters; no retry for a thumbnail
            log.warning("task %d: thumbnail not archived: %s", job.task_id, redact(exc.reason))
    archives.succeeded(db, job.task_id, video_name, thumb_name)
    return bool(video_name or thumb_name)


def _give_back(db: Database, task_id: int, holder: str | None) -> None:
    """A download abandoned by a shutdown: its lease goes back (`archives.give_back`)."""
    log.info("task %d: archival abandoned (stopping); its lease is given back", task_id)
    archives.give_back(db, task_id, holder)


def _hand_back(db: Database, task_id: int, holder: str | None) -> None:
    """The database failed mid-job (its file may be stored, its outcome not): the lease goes
    back once it answers again, or the task would wait out its long lease (the soak)."""
    for delay in HAND_BACK_WAITS:
        if shutdown.requested():
            return
        time.sleep(delay)
        with suppress(SQLAlchemyError):
            archives.give_back(db, task_id, holder)
            log.info("task %d: archival's lease given back after a database error", task_id)
            return


def _note_failure(
    db: Database, task_id: int, exc: DownloadError, *, holder: str | None = None
) -> None:
    reason = redact(exc.reason)[:500]
    archives.failed(db, task_id, reason, permanent=exc.permanent, holder=holder)


# -- choosing and claiming tasks --------------------------------------------------------------


def _claim(
    db: Database, settings: Settings, task_id: int, *, due_only: bool, holder: Heartbeat | None
) -> _Job | None:
    """Take the task for one attempt (`archives.claim`); None when another has it."""
    # only a registered holder's name goes on the lease: an unknown one is never taken for dead
    owner = holder.id if holder is not None and holder.registered else None
    claim = archives.claim(db, settings, task_id, due_only=due_only, owner=owner)
    if claim is None:
        return None
    image = claim.kind == "image"  # the image is its result, and it has no thumbnail
    job = _Job(
        task_id=claim.task_id,
        upstream_id=claim.upstream_id,
        video_url=claim.thumbnail_url if image else claim.video_url,
        thumbnail_url=None if image else claim.thumbnail_url,
        need_video=True,
        need_thumbnail=not image,
        upstream=claim.upstream,
        account=claim.account,
        image=image,
        shared=claim.shared,
        holder=owner,
        tag=heartbeats.file_tag(owner) if owner else "",
    )
    # asked after the claim's commit: a bucket's HEAD must not hold the database's write lock
    store = storage.primary(settings)
    if store is None:
        raise RuntimeError("archival is off (no TRACKER_MEDIA_DIR) but a claim was made")
    try:
        need_video, need_thumbnail = (
            not _has(store, name) for name in (claim.media_path, claim.thumbnail_path)
        )
    except StorageError as exc:
        _note_failure(db, task_id, DownloadError(exc.reason), holder=job.holder)
        return None
    if not need_video and not (need_thumbnail and job.thumbnail_url):
        archives.nothing_to_do(db, claim)  # already archived and stored
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
        except SQLAlchemyError:  # the database is the caller's business (a restart, say)
            _hand_back(db, task_id, job.holder)
            raise
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
    ids = archives.due(db, limit)
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
