"""Where archived videos and thumbnails live: a local folder, or an S3-compatible bucket.

- `base`: the `Store` every caller speaks to by file name, the checks on a name, the type
  of a stored file;
- `local`: `LocalStore`, TRACKER_MEDIA_DIR, the one-machine default;
- `s3`: `S3Store`, TRACKER_MEDIA_URL=s3://bucket/prefix, through boto3;
- here: which of them a process uses (`primary`, `local_copies`).

When both variables are set the bucket wins; the folder then only holds older copies
(served until `tracker archive --missing` moves them, see `media_move`).
"""

from __future__ import annotations

import os
import threading

from tracker.settings import Settings
from tracker.storage.base import Store
from tracker.storage.local import LocalStore
from tracker.storage.s3 import S3Store

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
