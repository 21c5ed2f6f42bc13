"""Media test helpers: the sample files, an origin that serves them, finished tasks to archive."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lumasim.media import SAMPLE_JPG as SAMPLE_JPG_FILE
from lumasim.media import SAMPLE_MP4
from tests.support.factory import make_task
from tests.support.servers import SHUTDOWN_POLL
from tracker.db import Database
from tracker.tasks.models import utcnow
from tracker.upstream.client import LumaClient
from tracker.upstream.operations import Request

SAMPLE = SAMPLE_MP4.read_bytes()
SAMPLE_JPG = SAMPLE_JPG_FILE.read_bytes()
Handler = Callable[[BaseHTTPRequestHandler], None]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Origin:
    """An HTTP/1.0 server on a loopback address whose answer per path a test sets."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Handler] = {}
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        origin = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                origin.hits.append((path, self.headers.get("Host", "")))
                handler = origin.routes.get(path)
                if handler is None:
                    self.send_error(404)
                    return
                # the client hanging up is what an aborted download looks like
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    handler(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), _Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=lambda: self.server.serve_forever(poll_interval=SHUTDOWN_POLL), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [path for path, _host in self.hits]

    def file(self, path: str, data: bytes, *, length: bool = True, ctype: str = "video/mp4") -> str:
        def handle(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            if length:
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = handle
        return f"{self.url}{path}?expires=1&sig=secret-signature"

    def status(self, path: str, code: int) -> str:
        def handle(h: BaseHTTPRequestHandler) -> None:
            h.send_response(code)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = handle
        return self.url + path

    def redirect(self, path: str, location: str, code: int = 302) -> str:
        def handle(h: BaseHTTPRequestHandler) -> None:
            h.send_response(code)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = handle
        return self.url + path

    def raw(self, path: str, handle: Handler) -> str:
        self.routes[path] = handle
        return self.url + path


def add_completed(
    db: Database,
    video_url: str | None,
    *,
    thumbnail_url: str | None = None,
    upstream_id: str | None = None,
    due: bool = True,
) -> int:
    """A completed task as store.apply leaves it (next_archive_at = now)."""
    now = utcnow()
    return make_task(
        db,
        "completed",
        user_prompt="a red fox in the snow",
        upstream_id=upstream_id,
        video_url=video_url,
        thumbnail_url=thumbnail_url,
        completed_at=now,
        next_archive_at=now if due else None,
        attempts=1,
    ).id


def sim_completed(sim: Any) -> tuple[str, LumaClient]:
    """A generation the simulator considers completed, and a client for it."""
    client = LumaClient(sim.url, "", connect_timeout=2, read_timeout=3)
    created = client.send(Request("/luma/generations", {"user_prompt": "a lighthouse at dusk"}))
    upstream_id = created.update.upstream_id
    assert upstream_id
    sim.set_state(upstream_id, "completed")
    return upstream_id, client
