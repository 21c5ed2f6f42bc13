"""How many requests run the app at once in a gevent worker, and what they wait for first.

gevent gives every connection a greenlet, so slow clients cost little: their headers and
small bodies are waited for cooperatively. But letting every connection into the app at once
is worse than gunicorn's threads were under load: on SQLite every callback wants the one write
lock, and 16 of them per process retrying for it (with the process often off a shared CPU)
starve some past their lock wait, where a bounded thread pool queued them in order (measured
in docs/benchmarks.md). So a greenlet first reads a small body whole (up to READ_AHEAD bytes,
cooperatively: a byte-a-second sender waits here, holding nothing), then takes one of `slots`
and runs the app. The slot is given back when the app returns, before a long answer (a video)
is streamed, so slow readers hold no slot either.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

READ_AHEAD = 1_000_001  # TRACKER_MAX_CALLBACK_BYTES' default, plus the byte that tells "too long"

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

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the slot is handed over by __exit__

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._free += 1


def limit(app: WSGIApp, slots: int) -> WSGIApp:
    """`app`, run by at most `slots` requests at once, in the order they came."""
    gate = Gate(slots)

    def admitted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        _read_ahead(environ)
        with gate:
            return app(environ, start_response)

    return admitted


def _read_ahead(environ: dict[str, Any]) -> None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return  # the app answers a bad length
    if 0 < length <= READ_AHEAD:
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))  # a client that hung up sent less
