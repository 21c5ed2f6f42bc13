"""Where archived videos and thumbnails live: a local folder, or an S3-compatible bucket.

- `stores`: the `Store` every caller speaks to by file name, the checks on a name, the
  type of a stored file; and `LocalStore`, TRACKER_MEDIA_DIR, the one-machine default;
- `s3`: `S3Store`, TRACKER_MEDIA_URL=s3://bucket/prefix, through boto3;
- here: which of them a process uses (`primary`, `local_copies`), and the move of older
  copies from the folder into the bucket (`move_local_copies`).

When both variables are set the bucket wins; the folder then only holds older copies
(served until `tracker archive --missing` moves them).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from sqlalchemy import or_, select

from tracker.db import Database
from tracker.settings import Settings
from tracker.storage.s3 import S3Store
from tracker.storage.stores import LocalStore, StorageError, Store
from tracker.tasks.models import Task

_lock = threading.Lock()
_cache: dict[tuple[Settings, int], Store] = {}


def primary(settings: Settings) -> Store | None:
    """Where archival writes and serving looks first: the bucket, else the folder, else None."""
    if settings.media_url:
        key = (settings, os.getpid())  # a client made before a fork is not shared with a child
        with _lock:
            store = _cache.get(key)
            if store is None:
                store = _cache[key] = S3Store(settings)
        return store
    if settings.media_dir:
        return LocalStore(settings.media_dir)
    return None


def local_copies(settings: Settings) -> LocalStore | None:
    """With a bucket in use, the folder whose older copies are still served and to be moved."""
    if settings.media_url and settings.media_dir:
        return LocalStore(settings.media_dir)
    return None


# -- older copies, from the folder into the bucket (`tracker archive --missing`) ------------
#
# Move archived copies from the local folder into the bucket (`tracker archive --missing`).
#
# After TRACKER_MEDIA_URL is set, copies made earlier are still in TRACKER_MEDIA_DIR; they
# are served from there until moved. The database keeps file names only (`12.mp4`), the same
# in the folder and the bucket, so moving a copy never rewrites a task. A local copy is
# deleted only once a HEAD on the bucket shows the object at the local file's size (the
# upload itself is verified the same way); any failure leaves the local copy where it was.

log = logging.getLogger(__name__)


@dataclass
class Moved:
    moved: int = 0  # uploaded, verified, local copy deleted
    already: int = 0  # the bucket had it at the same size: local copy deleted
    kept: list[str] = field(default_factory=list)  # left in the folder, with why


def move_local_copies(db: Database, settings: Settings) -> Moved:
    """Every task's file that is in the folder and not yet (verified) in the bucket."""
    result = Moved()
    bucket, local = primary(settings), local_copies(settings)
    if not isinstance(bucket, S3Store) or local is None:
        return result
    on_disk = local.names()
    if not on_disk:
        return result
    with db.read() as session:
        rows = session.execute(
            select(Task.media_path, Task.thumbnail_path).where(
                or_(Task.media_path.is_not(None), Task.thumbnail_path.is_not(None))
            )
        ).all()
    wanted = sorted({name for row in rows for name in row if name and name in on_disk})
    in_bucket = bucket.names() if wanted else set()
    for name in wanted:
        path = local.path(name)
        if path is None:  # gone meanwhile
            continue
        size = path.stat().st_size
        try:
            if name in in_bucket:
                stored = bucket.stat(name)
                if stored is None or stored.size != size:
                    result.kept.append(f"{name}: the bucket holds a different copy")
                    continue
                result.already += 1
            else:
                bucket.put(name, path)  # raises unless a HEAD shows it at `size` bytes
                result.moved += 1
        except StorageError as exc:
            log.warning("%s not moved into the bucket: %s", name, exc.reason)
            result.kept.append(f"{name}: {exc.reason}")
            continue
        try:
            local.delete(name)
        except OSError as exc:  # in the bucket now; the stray local copy is harmless
            result.kept.append(f"{name}: in the bucket, but not deleted here ({exc.strerror})")
            continue
        log.info("moved %s into %s (%d bytes)", name, bucket.describe(), size)
    return result
