"""Stream one link into a file, whole or not at all.

Used for archival (`fetch`, below) and by `tracker download`. The body streams (never
held in memory) through `netguard.checked_get` (public addresses only, every redirect
checked), with connect and read timeouts, an overall deadline (its sockets shut when it
passes: `shutdown.Deadlines`) and a byte cap counted as it arrives (a missing or lying
Content-Length changes nothing). It lands in a temporary file in the target directory that
is fsync'd and `os.replace`d into place only when complete, so a reader sees the old file
or the whole new one, never a half file; on any error the temporary file is removed.

A process killed mid-download cannot remove its temporary file, so each one is named for
its writer (`.<name>.<writer tag>.<random>.part`, the tag from `heartbeats.file_tag`) and
`remove_partials` deletes those whose writer is no longer alive.

Links are credentials (presigned): error messages name a status or a host, never a URL.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

import requests

from tracker import shutdown
from tracker.settings import Settings
from tracker.storage import netguard
from tracker.storage.stores import StorageError, Store
from tracker.tasks.schedule import DOWNLOAD_DEADLINE
from tracker.upstream.client import Answer, LumaClient, UpstreamError

CHUNK = 64 * 1024
# one file, start to end: 500 MB at ~0.6 MB/s; a server dripping bytes cannot hold a worker
EXPIRED_STATUSES = frozenset({403, 404, 410})
HEADERS = {"User-Agent": "luma-tracker/0.1", "Accept": "*/*", "Accept-Encoding": "identity"}


class DownloadError(Exception):
    """A download that did not produce a file; `permanent` ones are not retried on a timer."""

    permanent = False

    def __init__(self, reason: str, *, permanent: bool | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if permanent is not None:
            self.permanent = permanent


class TooLarge(DownloadError):
    """Past TRACKER_MEDIA_MAX_BYTES: the same file will not get smaller."""

    permanent = True


# the writer's tag, then mkstemp's eight random characters
_TAGGED_PART = re.compile(r"\.([0-9a-f]{12})\.[a-z0-9_]{8}\.part$")


def download(
    url: str, dest: Path, settings: Settings, guard: netguard.Guard, *, tag: str = ""
) -> int:
    """Stream `url` into `dest` atomically and return its size; leaves nothing behind on error.

    `tag` names the writer on the temporary file (see `remove_partials`).
    """
    prefix = f".{dest.name}.{tag}." if tag else f".{dest.name}."
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=prefix, suffix=".part")
    except OSError as exc:
        raise DownloadError(f"cannot write to the media directory ({_why(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            size = _stream(url, out, settings, guard)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if shutdown.requested() and isinstance(exc, Exception):
            # cut by a shutdown (whatever error the cut caused): given back, not a failure
            raise shutdown.Abandoned("the process is stopping") from None
        if isinstance(exc, OSError):  # a full disk, say (network errors were converted already)
            raise DownloadError(f"cannot write the file ({_why(exc)})") from None
        raise
    _fsync_dir(dest.parent)
    return size


def remove_partials(
    directory: Path,
    live_tags: Callable[[], set[str]],
    *,
    untagged_after: float,
    prefix: str = ".",
) -> list[str]:
    """Delete temporary files whose writer is gone; return their names.

    A tagged file goes when its tag is not among `live_tags()`; an untagged one (a writer
    with no heartbeat, or a version before tags) when untouched for `untagged_after`
    seconds. The directory is listed before the live writers are asked: a file seen was
    made by a writer that had registered by then, so a live writer's file is never taken.
    """
    try:
        with os.scandir(directory) as entries:
            parts = [
                entry
                for entry in entries
                if entry.name.startswith(prefix) and entry.name.endswith(".part")
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not parts:
        return []
    live = live_tags()
    now = time.time()
    removed = []
    for entry in parts:
        match = _TAGGED_PART.search(entry.name)
        try:
            stale = (
                match.group(1) not in live
                if match
                else now - entry.stat().st_mtime > untagged_after
            )
            if stale:
                os.unlink(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:  # its writer finished or another sweep took it
            continue
    return removed


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (a crash right after must not lose the new name)."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stream(url: str, out: BinaryIO, settings: Settings, guard: netguard.Guard) -> int:
    """`_read`, cut off at DOWNLOAD_DEADLINE however slowly the server sends (headers too)."""
    ends = time.monotonic() + DOWNLOAD_DEADLINE
    with shutdown.deadlines().attempt(ends, netguard.watch) as cut:
        try:
            size = _read(url, out, settings, guard)
        except DownloadError:
            if not cut.passed:
                raise
        if cut.passed:  # a cut read may also look like a body that ended: never kept
            raise DownloadError(f"took longer than {DOWNLOAD_DEADLINE:g} s")
        return size


def _read(url: str, out: BinaryIO, settings: Settings, guard: netguard.Guard) -> int:
    cap = settings.media_max_bytes
    timeout = (settings.connect_timeout, settings.read_timeout)
    # requests' exceptions carry the URL in their text; only their type is kept (`from None`)
    try:
        with netguard.checked_get(url, guard, timeout=timeout, headers=HEADERS) as response:
            status = response.status_code
            if status in EXPIRED_STATUSES:
                raise DownloadError(f"the link answered HTTP {status} (expired?)")
            if status != 200:
                raise DownloadError(f"the link answered HTTP {status}")
            declared = response.headers.get("Content-Length", "")
            # ASCII digits only: isdigit() also takes "²" (a latin-1 byte), which int() refuses,
            # as it refuses more than 4,300 digits (a length that long is too large anyway)
            if (
                declared.isascii()
                and declared.isdigit()
                and (len(declared) > 18 or int(declared) > cap)
            ):
                raise TooLarge(f"larger than the {cap}-byte limit ({declared} bytes announced)")
            total = 0
            with shutdown.interruptible(response):  # SIGTERM cuts it (tracker/shutdown.py)
                for chunk in response.iter_content(CHUNK):
                    total += len(chunk)
                    if total > cap:  # counted, whatever Content-Length said
                        raise TooLarge(f"larger than the {cap}-byte limit")
                    out.write(chunk)
                shutdown.check()  # a cut answer may end without an error: never kept as whole
    except netguard.FetchRefused as exc:
        raise DownloadError(str(exc), permanent=True) from None
    except netguard.FetchError as exc:
        raise DownloadError(str(exc)) from None
    except requests.Timeout:
        raise DownloadError("the link timed out") from None
    except requests.RequestException as exc:
        raise DownloadError(f"the download broke off ({type(exc).__name__})") from None
    if total == 0:
        raise DownloadError("the link gave an empty file")
    return total


# -- one archived file: the stored link first, then a fresh one ------------------------------
# The upstream's links are presigned and expire within the hour, so a stored link that fails
# (expired, say) is followed by one asked of the upstream now (`FreshLinks`: its download
# route, else a query, each asked at most once an attempt), into the store's `receive`.


class FreshLinks:
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


def fetch(
    stored: str | None,
    fresh: Callable[[], str | None],
    name: str,
    store: Store,
    settings: Settings,
    guard: netguard.Guard,
    tag: str,
) -> int:
    """Download into the store under `name`; a failure to store is a (retried) DownloadError.

    `tag` names this process on the temporary file, so that a sweep can tell when its
    writer died (`flows.archive.remove_stale_partials`).
    """
    try:
        with store.receive(name, tag) as dest:
            return fetch_to(stored, fresh, dest, settings, guard, tag)
    except StorageError as exc:
        raise DownloadError(exc.reason) from None


def fetch_to(
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
