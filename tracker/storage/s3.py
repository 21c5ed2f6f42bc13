"""`S3Store`: TRACKER_MEDIA_URL=s3://bucket/prefix, through boto3 with the standard AWS variables.

A download lands in a temporary file first and is then uploaded by boto3's managed transfer
(multipart past 8 MB, read from disk in parts, never whole in memory); an upload counts only
once a HEAD shows the object at the file's size. The file is staged in TRACKER_MEDIA_DIR when
it is set (it is by default), named like a partial download with the writer's tag, so that the
worker's sweep removes what a killed process left there; without that folder it goes to the
system's temporary folder, which no sweep may empty (other programs keep files there). Errors
name botocore's code, never its text (`why`): that text may carry a signed URL.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tracker import redact
from tracker.settings import Settings
from tracker.storage.stores import StorageError, Store, Stored, check, file_type, valid_name

if TYPE_CHECKING:  # boto3's types come from the stubs the test extras install
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

PRESIGN_SECONDS = 300  # a redirect to the bucket is good for five minutes
MB = 1024 * 1024


class S3Store(Store):
    """A bucket and a key prefix; one thread-safe boto3 client per process."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(settings.media_url)
        self.url = settings.media_url
        self.staging = Path(settings.media_dir) if settings.media_dir else None
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
        check(name)
        return self.prefix + name

    @contextmanager
    def receive(self, name: str, tag: str = "") -> Iterator[Path]:
        check(name)
        if self.staging is None:
            with tempfile.TemporaryDirectory(prefix="tracker-upload-") as folder:
                path = Path(folder) / name
                yield path
                self.put(name, path)
            return
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            prefix = f".{name}.{tag}." if tag else f".{name}."  # as `download` names its own
            fd, staged = tempfile.mkstemp(dir=self.staging, prefix=prefix, suffix=".part")
        except OSError as exc:
            raise StorageError(f"cannot stage the upload ({type(exc).__name__})") from None
        os.close(fd)
        path = Path(staged)
        try:
            yield path
            self.put(name, path)
        finally:
            path.unlink(missing_ok=True)

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
