"""An app served by a real HTTP server on 127.0.0.1, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

# how often a test's server thread looks for a shutdown: every test with a server waits for
# it when the server stops (serve_forever's default is half a second)
SHUTDOWN_POLL = 0.01


# on requests to a web process the test stops next: gunicorn's worker waits out an idle
# keep-alive connection (`keepalive`, 5 s) before it exits, and requests leaves the socket
# open after its answer is read
CLOSE = {"Connection": "close"}


class _QuietHandler(WSGIRequestHandler):
    """No request log: callback paths hold secrets, and the test output stays readable."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Dispatch:
    """Lets the server pick its port before the app (which needs its own URL) exists."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@dataclass
class LiveServer:
    url: str
    server: BaseWSGIServer
    thread: threading.Thread
    app: Any = None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(app_factory: Callable[[str], Any]) -> LiveServer:
    """Serve an app on 127.0.0.1 in a thread; `app_factory(url)` builds it knowing its URL."""
    dispatch = _Dispatch()
    server = make_server("127.0.0.1", 0, dispatch, threaded=True, request_handler=_QuietHandler)
    url = f"http://127.0.0.1:{server.port}"
    dispatch.app = app_factory(url)
    thread = threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True)
    thread.start()
    return LiveServer(url=url, server=server, thread=thread, app=dispatch.app)


def free_port() -> int:
    """A port nothing listens on now, for a process a test starts (fixed ports collide when
    several test runs share the machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
