"""A notify_hook receiver: a real HTTP server on 127.0.0.1 that keeps every callback it gets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.support.servers import SHUTDOWN_POLL


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # callback paths hold secret tokens


class Receiver:
    """A callback receiver on a real socket; answers `status` and records every POST."""

    def __init__(self) -> None:
        self.status = 200
        self.got: list[tuple[str, Any]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(
            target=self.server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True
        ).start()

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        self.got.append((request.path, request.get_json(silent=True)))
        return Response("ok", self.status)(environ, start_response)

    def states(self) -> list[str]:
        return [body["state"] for _, body in list(self.got)]
