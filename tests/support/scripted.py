"""A test's own upstream: answers from a script, records every request it gets.

The simulator plays a well-behaved upstream; this one plays a misbehaving one
(refusals, HTML gateway pages, slow answers) exactly when a test says so.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.support.servers import LiveServer, serve


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str -> text as given
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str | None = None
    hold: threading.Event | None = None  # answer only once the test sets it


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def raw_task(task_id: str, state: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "prompt": "",
        "state": state,
        "queue_state": None,
        "created_at": "2024-12-22T14:48:39.947851Z",
        "batch_id": "",
        "video": None,
        "video_raw": None,
        "liked": None,
        "estimate_wait_seconds": None,
        "thumbnail": None,
        "last_frame": None,
        **extra,
    }


class ScriptedUpstream:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.server: LiveServer = serve(lambda _url: self)
        self.url = self.server.url

    def then(self, *replies: Reply) -> ScriptedUpstream:
        with self._lock:
            self.replies.extend(replies)
        return self

    def route(self, method: str, path: str, *replies: Reply) -> ScriptedUpstream:
        """Answer `method path` from its own script, before the shared one; the last repeats."""
        with self._lock:
            self.routes.setdefault((method.upper(), path), []).extend(replies)
        return self

    def creates(self) -> list[Seen]:
        """The creates and extends received (batch queries are POSTs too, but not these)."""
        return [s for s in self.posts() if s.path.startswith(("/luma/generations", "/generations"))]

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        raw = request.get_data()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
            routed = self.routes.get((request.method, request.path))
            reply: Reply | None
            if routed:
                reply = routed.pop(0) if len(routed) > 1 else routed[0]
            else:
                reply = self.replies.pop(0) if self.replies else None
        if reply is None and request.method == "GET":  # the default: the task asked about
            reply = Reply(body=raw_task(request.path.rsplit("/", 1)[-1]))
        if reply is None:  # the default: accept and answer the raw object
            reply = Reply(body=raw_task(str(uuid.uuid4())))
        if reply.delay:
            time.sleep(reply.delay)
        if reply.hold is not None:
            reply.hold.wait(10)
        if isinstance(reply.body, dict | list):
            response = Response(json.dumps(reply.body), reply.status, reply.headers)
            response.content_type = reply.content_type or "application/json"
        else:
            response = Response(reply.body or "", reply.status, reply.headers)
            response.content_type = reply.content_type or "text/html"
        return response(environ, start_response)

    def stop(self) -> None:
        self.server.stop()
