"""The simulator's own sample media and the presigned links to it.

Why here: the tracker serves the dashboard's files only; the simulated upstream hands out
links to its own server (`/files/<task id>.mp4|jpg|png?expires=...&sig=...`), which expire
like the real CDN's and serve these small files for every completed task.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import struct
import time
from collections.abc import Container
from pathlib import Path

from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_MP4 = SAMPLES / "sample.mp4"
SAMPLE_JPG = SAMPLES / "sample.jpg"
SAMPLE_PNG = SAMPLES / "sample.png"
SERVED = {
    "mp4": (SAMPLE_MP4, "video/mp4"),
    "jpg": (SAMPLE_JPG, "image/jpeg"),
    "png": (SAMPLE_PNG, "image/png"),
}
# <task id>[.r<revision>].<ext>: a rerun (Luma's upscale, audio) gives the same id a new name
_FILE_NAME = re.compile(r"([0-9a-f-]{36})(?:\.r[0-9]+)?\.(mp4|jpg|png)")


def _detail(message: str, status: int) -> Response:
    return Response(json.dumps({"detail": message}), status, mimetype="application/json")


def distinct_video(name: str) -> bytes:
    """The sample video with an MP4 `free` box naming the file appended: still a valid MP4,
    and its bytes differ per task, so a copy archived for the wrong task shows (the soak)."""
    payload = name.encode()
    return SAMPLE_MP4.read_bytes() + struct.pack(">I", 8 + len(payload)) + b"free" + payload


class SampleMedia:
    """Signs links with a secret of its own and serves the files behind valid ones."""

    def __init__(self, secret: bytes | None = None, *, distinct: bool = False) -> None:
        """`secret`: the one a stored simulator kept, so its links outlive a restart;
        `distinct`: each video's bytes its own (`distinct_video`), not the one sample's."""
        self._secret = secret or secrets.token_bytes(32)
        self._distinct = distinct

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._secret, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, base: str, task_id: str, ext: str, ttl: float, revision: int = 0) -> str:
        """A presigned link, fresh each time it is asked for, valid `ttl` seconds.

        A later `revision` of the same task is another name: Luma's upscale and added audio
        keep the generation's id and hand out a new video, never the old one's link again.
        """
        stem = task_id if revision == 0 else f"{task_id}.r{revision}"
        expires, name = int(time.time() + ttl), f"{stem}.{ext}"
        return f"{base}/files/{name}?expires={expires}&sig={self._sign(name, expires)}"

    def serve(self, request: Request, name: str, tasks: Container[str]) -> Response:
        match = _FILE_NAME.fullmatch(name)
        if match is None or match.group(1) not in tasks:
            return _detail("Not Found", 404)
        expires_text = request.args.get("expires", "")
        expires = int(expires_text) if expires_text.isdigit() else -1
        expected = self._sign(name, expires).encode()
        if not hmac.compare_digest(request.args.get("sig", "").encode(), expected):
            return _detail("Invalid signature", 403)
        if expires < time.time():
            return _detail("Request has expired", 403)
        path, mimetype = SERVED[match.group(2)]
        if self._distinct and match.group(2) == "mp4":
            return Response(distinct_video(name), mimetype=mimetype)
        return send_file(path, request.environ, mimetype=mimetype, conditional=True, max_age=0)
