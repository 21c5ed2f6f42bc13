"""How many requests run the app at once in a gevent worker, and what they wait for first.

gevent gives every connection a greenlet, so slow clients cost little: their headers and
small bodies are waited for cooperatively. But letting every connection into the app at once
is worse than gunicorn's threads were under load: on SQLite every callback wants the one write
lock, and 16 of them per process retrying for it (with the process often off a shared CPU)
starve some past their lock wait, where a bounded thread pool queued them in order (measured
in docs/benchmarks.md). So a greenlet first reads a small body whole (up to READ_AHEAD bytes,
cooperatively: a byte-a-second sender waits here, holding nothing), then takes one of `slots`
and runs the app. The slot is given back when the app returns, before a long answer (a video)
is streamed, so slow readers hold no slot either. A request that waits QUEUE_WAIT for a slot
(every slot waiting on a locked database, say) gets a 503 with Retry-After; /healthz never
waits for one. Those 503s are counted in /metrics like the app's own answers (`_count_busy`),
so a busy service shows in its error rate.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from tracker import metrics
from tracker.web.callbacks import RULE as CALLBACK_RULE
from tracker.web.metrics import callback_result

READ_AHEAD = 1_000_001  # TRACKER_MAX_CALLBACK_BYTES' default, plus the byte that tells "too long"
QUEUE_WAIT = 2.0  # seconds a request waits for a slot, then 503 (the sender retries)
BUSY = "<busy>"  # the route label of a request turned away before routing (not a callback)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Gate:
    """At most `slots` holders, served first come, first served.

    gevent's Semaphore lets a newcomer take a free slot ahead of those already waiting, and
    on a busy CPU some requests then waited past two seconds (measured); here a released
    slot goes to the longest waiter. Built on `threading`, which gevent has patched by the
    time wsgi.py runs, so it works for threads and greenlets alike.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def enter(self, timeout: float) -> bool:
        """Take a slot, waiting at most `timeout` seconds; False if none came."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout):  # the slot is handed over by leave()
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ended
                return True
            self._waiting.remove(turn)
            return False

    def leave(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._free += 1


def limit(app: WSGIApp, slots: int) -> WSGIApp:
    """`app`, run by at most `slots` requests at once, in the order they came."""
    gate = Gate(slots)

    def admitted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            return app(environ, start_response)  # touches nothing: never waits behind others
        _read_ahead(environ)
        waited = time.perf_counter()
        if not gate.enter(QUEUE_WAIT):
            _count_busy(environ, time.perf_counter() - waited)
            return _busy(start_response)
        # a request that sleeps (GET /api/tasks/<id>?wait=, web/waiting.py) gives its slot
        # back while it sleeps and takes one again before it answers
        environ["tracker.gate"] = gate
        try:
            return app(environ, start_response)
        finally:
            gate.leave()

    return admitted


def _count_busy(environ: dict[str, Any], seconds: float) -> None:
    """The app never ran, so no route template is known: a callback is labelled by its route's
    template (never its path, which holds the task's token), anything else as BUSY."""
    method = str(environ.get("REQUEST_METHOD", ""))
    if str(environ.get("PATH_INFO", "")).startswith(CALLBACK_RULE.removesuffix("<token>")):
        metrics.http_request(method, CALLBACK_RULE, 503, seconds)
        metrics.callback(callback_result(503, understood=True))
    else:
        metrics.http_request(method, BUSY, 503, seconds)


def _busy(start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps({"error": "the service is busy; try again shortly"}).encode()
    start_response(
        "503 Service Unavailable",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Retry-After", "5"),
        ],
    )
    return [body]


def _read_ahead(environ: dict[str, Any]) -> None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return  # the app answers a bad length
    if 0 < length <= READ_AHEAD:
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))  # a client that hung up sent less
