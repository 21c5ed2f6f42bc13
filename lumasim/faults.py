"""Faults a test queues for a route: an error answer, a slow one, a dropped connection, and
the ambiguous kind (`after=True`: the work is done, then the answer is the fault)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Response

# "create" is every request that makes a generation: the proxy's extend, Luma's upscale, audio,
# modify, reframe and images too (routes.CREATES), as a submit is one whatever its operation
ROUTES = ("create", "query", "list", "batch", "download_url", "file", "credits")


@dataclass
class Fault:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]
    times: int
    delay: float
    drop: bool
    after: bool


class Faults:
    """The queued faults of each route, taken in order, each for its number of requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {route: deque() for route in ROUTES}

    def add(
        self,
        route: str,
        *,
        status: int,
        body: str | bytes | dict[str, Any] | None,
        headers: dict[str, str] | None,
        times: int,
        delay: float,
        drop: bool,
        after: bool,
    ) -> None:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
        if body is None:
            body = {"detail": f"Simulated upstream error (HTTP {status})"}
        if isinstance(body, dict):
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data = body.encode() if isinstance(body, str) else body
            ctype = "text/html" if data.lstrip().startswith(b"<") else "text/plain"
            ctype += "; charset=utf-8"
        fault = Fault(status, data, ctype, dict(headers or {}), times, delay, drop, after)
        with self._lock:
            self._queues[route].append(fault)

    def take(self, route: str) -> Fault | None:
        with self._lock:
            queue = self._queues[route]
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
            return fault

    @staticmethod
    def answer(fault: Fault) -> Response | None:
        """The fault's answer after its delay; None: drop the connection without one."""
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.drop:
            return None
        response = Response(fault.body, fault.status, content_type=fault.content_type)
        for name, value in fault.headers.items():
            response.headers[name] = value
        return response
