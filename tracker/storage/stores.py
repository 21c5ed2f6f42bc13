"""The stores: what every one is (a `Store` speaks by file name, and the checks every name
passes), and `LocalStore`, TRACKER_MEDIA_DIR, the one-machine default.

Archival (`flows/archive`), serving (`web/media`) and the CLI speak to a `Store` by file
name (`12.mp4`, `12.jpg`), which is also what the database keeps, so the same row is valid
in the folder and in the bucket and moving copies between them never rewrites a task. The
stores are `LocalStore` (a download is written straight into its folder, atomically; a copy
beside its name first, then renamed) and `storage.s3.S3Store`; `storage` chooses.
"""

from __future__ import annotations

import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

# what a stored name may look like: no folders, no dot-files, nothing to climb out with
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
IMAGE_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
)


class StorageError(Exception):
    """The store refused or failed; the reason names neither a secret nor a signed URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Stored:
    size: int
    content_type: str | None = None
    etag: str | None = None


def valid_name(name: str | None) -> TypeGuard[str]:
    return bool(name) and NAME.fullmatch(name or "") is not None and ".." not in (name or "")


def content_type(name: str, head: bytes) -> str:
    """Videos are MP4; thumbnails are stored as .jpg whatever the upstream sent: bytes decide."""
    if name.endswith(".mp4"):
        return "video/mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, mimetype in IMAGE_TYPES:
        if head.startswith(magic):
            return mimetype
    return "application/octet-stream"


def file_type(name: str, path: Path) -> str:
    with path.open("rb") as f:
        return content_type(name, f.read(16))


class Store(ABC):
    """What archival and serving need; names are checked with `valid_name` before any use."""

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def receive(self, name: str, tag: str = "") -> AbstractContextManager[Path]:
        """A path to write the whole file to; stored under `name` when the block succeeds.

        `tag` names the writing process on any file left behind if it dies, so that the
        sweep (`flows.archive.remove_stale_partials`) can tell a dead writer's file from a
        live one's.
        """

    @abstractmethod
    def put(self, name: str, source: Path) -> int:
        """Store a copy of a local file (streamed) and return its verified size."""

    @abstractmethod
    def stat(self, name: str | None) -> Stored | None: ...

    @abstractmethod
    def names(self) -> set[str]:
        """Every stored name (one listing instead of one question per task)."""

    @abstractmethod
    def delete(self, name: str) -> None: ...


def check(name: str) -> None:
    if not valid_name(name):
        raise StorageError(f"not a stored file name: {name[:40]!r}")


class LocalStore(Store):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def path(self, name: str | None) -> Path | None:
        """The file for a stored name, if it exists inside the folder."""
        if not valid_name(name):
            return None
        root = self.root.resolve()
        path = (root / str(name)).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    @contextmanager
    def receive(self, name: str, tag: str = "") -> Iterator[Path]:
        check(name)
        yield self.root / name  # `download` writes it atomically in place, tagged meanwhile

    def put(self, name: str, source: Path) -> int:
        check(name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.put.part"
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, self.root / name)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink()
            raise StorageError(f"cannot write to the media directory ({exc.strerror})") from None
        return (self.root / name).stat().st_size

    def stat(self, name: str | None) -> Stored | None:
        path = self.path(name)
        if path is None:
            return None
        return Stored(size=path.stat().st_size, content_type=file_type(path.name, path))

    def names(self) -> set[str]:
        with suppress(OSError):
            return {p.name for p in self.root.iterdir() if valid_name(p.name) and p.is_file()}
        return set()

    def delete(self, name: str) -> None:
        path = self.path(name)
        if path is not None:
            path.unlink()
