"""Where archived videos and thumbnails live: a local folder, or an S3-compatible bucket.

Archival (`media`), serving (`web/media`) and the CLI speak to a `Store` by file name
(`12.mp4`, `12.jpg`), which is also what the database keeps, so the same row is valid in
the folder and in the bucket and moving copies between them never rewrites a task.

- `LocalStore`: TRACKER_MEDIA_DIR, the one-machine default. A download is written
  straight into the folder (atomically, by `download`).
- `S3Store`: TRACKER_MEDIA_URL=s3://bucket/prefix, through boto3 with the standard AWS
  variables. A download lands in a temporary file first and is then uploaded by boto3's
  managed transfer (multipart past 8 MB, read from disk in parts, never whole in memory);
  an upload counts only once a HEAD shows the object at the file's size.

When both variables are set the bucket wins; the folder then only holds older copies
(served until `tracker archive --missing` moves them, see `media_move`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urlsplit

from . import redact
from .settings import Settings

if TYPE_CHECKING:  # boto3's types come from the stubs the test extras install
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

# what a stored name may look like: no folders, no dot-files, nothing to climb out with
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
PRESIGN_SECONDS = 300  # a redirect to the bucket is good for five minutes
MB = 1024 * 1024
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
    def receive(self, name: str) -> AbstractContextManager[Path]:
        """A path to write the whole file to; stored under `name` when the block succeeds."""

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
    def receive(self, name: str) -> Iterator[Path]:
        _check(name)
        yield self.root / name  # `download` writes it atomically in place

    def put(self, name: str, source: Path) -> int:
        _check(name)
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


class S3Store(Store):
    """A bucket and a key prefix; one thread-safe boto3 client per process."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(settings.media_url)
        self.url = settings.media_url
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
        config = Config(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            # an S3-compatible server at its own address (MinIO, Ceph, moto) wants path-style
            s3={"addressing_style": "path" if settings.aws_endpoint_url else "auto"},
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.aws_endpoint_url or None,
            region_name=settings.aws_region or None,
            aws_access_key_id=settings.aws_access_key_id or None,
            aws_secret_access_key=settings.aws_secret_access_key or None,
            config=config,
        )

    def describe(self) -> str:
        return self.url

    def key(self, name: str) -> str:
        _check(name)
        return self.prefix + name

    @contextmanager
    def receive(self, name: str) -> Iterator[Path]:
        _check(name)
        with tempfile.TemporaryDirectory(prefix="tracker-upload-") as folder:
            path = Path(folder) / name
            yield path
            self.put(name, path)

    def put(self, name: str, source: Path) -> int:
        from boto3.s3.transfer import TransferConfig

        size = source.stat().st_size
        # the managed transfer reads the file in parts: multipart from 8 MB, 4 parts in flight
        transfer = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB)
        extra = {"ContentType": file_type(name, source)}
        try:
            self.client.upload_file(
                str(source), self.bucket, self.key(name), ExtraArgs=extra, Config=transfer
            )
        except Exception as exc:
            raise StorageError(f"upload to the bucket failed ({why(exc)})") from None
        stored = self.stat(name)
        if stored is None or stored.size != size:
            found = "nothing" if stored is None else f"{stored.size} bytes"
            raise StorageError(f"upload not verified: {size} bytes sent, the bucket has {found}")
        return size

    def stat(self, name: str | None) -> Stored | None:
        if not valid_name(name):
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(str(name)))
        except Exception as exc:
            if status_of(exc) == 404:
                return None
            raise StorageError(f"the bucket did not answer ({why(exc)})") from None
        return Stored(
            size=int(head["ContentLength"]),
            content_type=head.get("ContentType"),
            etag=head.get("ETag"),
        )

    def names(self) -> set[str]:
        found: set[str] = set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    if valid_name(name):
                        found.add(name)
        except Exception as exc:
            raise StorageError(f"cannot list the bucket ({why(exc)})") from None
        return found

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            raise StorageError(f"the bucket refused the removal ({why(exc)})") from None

    def presigned_url(self, name: str, content_type: str | None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(name)}
        if content_type:
            params["ResponseContentType"] = content_type
        return self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=PRESIGN_SECONDS
        )

    def get(self, name: str, **conditions: Any) -> GetObjectOutputTypeDef:
        """get_object (Range=, IfNoneMatch=); botocore's errors pass through for the caller."""
        return self.client.get_object(Bucket=self.bucket, Key=self.key(name), **conditions)


def _check(name: str) -> None:
    if not valid_name(name):
        raise StorageError(f"not a stored file name: {name[:40]!r}")


def status_of(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NotFound"):
        return 404
    return status if isinstance(status, int) else None


def why(exc: BaseException) -> str:
    """botocore's error code or exception type: never its text, which may carry a signed URL.

    boto3's managed transfer wraps the ClientError (S3UploadFailedError): its code is inside.
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        code = (getattr(seen, "response", None) or {}).get("Error", {}).get("Code")
        if code:
            return str(code)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


# -- the stores a process uses ------------------------------------------------------------------

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
