"""A video origin that holds its answer, and workers spawned to archive from it.

Shared by the tests that kill or stop a worker mid-download (issue 9 item 9, issue 12 item 7).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.media import Origin
from tests.support.workers import KEY, TRACKER, Proc
from tracker.db import Database

VIDEO = os.urandom(3 * 1024 * 1024)
HEAD = 256 * 1024  # sent at once; the rest waits for the test's word
# TRACKER_WORKER_STALE_AFTER for the take-over tests: a killed worker counts as dead after
# 5 s rather than a minute (the take-over is the same, the wait for it far shorter)
STALE_AFTER = 5.0


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin("127.0.0.1")
    yield server
    server.stop()


def held_video(release: threading.Event) -> Callable[[BaseHTTPRequestHandler], None]:
    """A video whose first bytes come at once and the rest only after `release` is set."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Content-Length", str(len(VIDEO)))
        h.end_headers()
        if not release.is_set():
            h.wfile.write(VIDEO[:HEAD])
            h.wfile.flush()
            release.wait(120)
            h.wfile.write(VIDEO[HEAD:])  # to a killed worker: a broken pipe, ignored
            return
        h.wfile.write(VIDEO)

    return handle


def partials(media_dir: Path) -> list[str]:
    return sorted(p.name for p in media_dir.glob(".*.part")) if media_dir.exists() else []


@pytest.fixture
def spawn(db: Database, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `tracker <args>` (a worker by default) archiving into `media_dir`.

    `stale_after` shortens the heartbeat's staleness for the processes of a take-over test.
    """
    started: list[Proc] = []

    def start(media_dir: Path, *args: str, stale_after: float | None = None) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
        env.pop("PUBLIC_BASE_URL", None)
        env.update(
            DATABASE_URL=db.url,
            LUMA_API_BASE="http://127.0.0.1:9",  # no upstream: the stored link is enough
            LUMA_API_KEY=KEY,
            LUMA_CONNECT_TIMEOUT="2",
            LUMA_READ_TIMEOUT="30",  # the held download outlives the kill
            TRACKER_MEDIA_DIR=str(media_dir),
            TRACKER_MEDIA_ALLOW_PRIVATE="1",
            TRACKER_WORKER_INTERVAL="0.2",
        )
        if stale_after is not None:  # TRACKER_WORKER_STALE_AFTER, else the default minute
            env["TRACKER_WORKER_STALE_AFTER"] = str(stale_after)
        proc = Proc([TRACKER, *(args or ("worker",))], env, tmp_path / f"proc{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(timeout=10)
