"""Fetching one archived file: the stored link first, then a fresh one from the upstream.

The upstream's links are presigned and expire within the hour, so a stored link that fails
(expired, say) is followed by one asked of the upstream now (`FreshLinks`: its download
route, else a query, each asked at most once an attempt). The bytes go through `download`
(public addresses only, every redirect checked) into the store's `receive`, which keeps
a whole file only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tracker.settings import Settings
from tracker.storage import netguard
from tracker.storage.download import DownloadError, TooLarge, download
from tracker.storage.stores import StorageError, Store
from tracker.upstream.client import Answer, LumaClient, UpstreamError


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
