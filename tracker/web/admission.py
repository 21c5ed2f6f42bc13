"""How many requests run the app at once in a gevent worker, what they wait for first, and
how a `GET /api/tasks/<id>?wait=SECONDS` waits without holding a place.

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

`?wait=`: the API answers as soon as the task is final, or after the wait. A waiter reads one
column of one row every POLL_EVERY seconds and sleeps in between: under gunicorn's gevent
worker (gunicorn.conf.py) `time.sleep` is cooperative, so a waiter holds no OS thread and
callbacks are served beside any number of them. The gate's slot ("8 requests in the app at
once") is given back while the waiter sleeps, and taken again, in turn, before it answers:
sleeping waiters take no slot from callbacks. Its reads of the one column run without a slot
(a read never waits on SQLite's write lock). Still, waiters are capped per process
(MAX_WAITERS; a few under a thread-per-request server, where each one does hold a thread):
past the cap the answer comes at once with the current state, and the `X-Tracker-Wait`
header says `skipped`, so a client knows to ask again.
"""

from __future__ import annotations

import io
import json
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from tracker import metrics
from tracker.db import Database
from tracker.flows import validate
from tracker.tasks.models import FINAL_STATES, Task
from tracker.web.callbacks import RULE as CALLBACK_RULE
from tracker.web.callbacks import callback_result

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
        # a request that sleeps (GET /api/tasks/<id>?wait=, `until_final`) gives its slot
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


# -- ?wait= ---------------------------------------------------------------------------------


MAX_WAIT = 60.0
POLL_EVERY = 0.5
MAX_WAITERS = 256  # cooperative (gevent): each costs a greenlet and a query every POLL_EVERY
MAX_THREAD_WAITERS = 2  # a thread per request: never more than this many threads asleep

_lock = threading.Lock()
_waiters = 0


def wait_arg(raw: str | None) -> float:
    """?wait= as seconds (0 when absent); anything but a number from 0 to 60 is a 400."""
    if raw is None:
        return 0.0
    problem = validate.ValidationError(
        "wait", f"wait must be a number of seconds from 0 to {MAX_WAIT:g}"
    )
    if not raw.isascii() or len(raw) > 32:  # any float's repr fits; nothing longer is read
        raise problem
    try:
        value = float(raw)
    except ValueError:
        raise problem from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT:
        raise problem
    return value


def cooperative() -> bool:
    """True under gevent's monkey patching: a sleeping waiter then holds no thread."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("time"))


def cap() -> int:
    return MAX_WAITERS if cooperative() else MAX_THREAD_WAITERS


def _state(db: Database, task_id: int) -> str | None:
    with db.read() as session:
        return session.scalar(select(Task.state).where(Task.id == task_id))


def until_final(db: Database, task_id: int, seconds: float, gate: Gate | None = None) -> bool:
    """Sleep until the task is final (or gone) or `seconds` pass; False when past the cap.

    `gate` is the admission gate whose slot this request holds (None outside gevent).
    """
    global _waiters
    with _lock:
        if _waiters >= cap():
            return False
        _waiters += 1
    if gate is not None:
        gate.leave()
    try:
        deadline = time.monotonic() + seconds
        while True:
            state = _state(db, task_id)
            left = deadline - time.monotonic()
            if state is None or state in FINAL_STATES or left <= 0:
                return True
            time.sleep(min(POLL_EVERY, left))
    finally:
        with _lock:
            _waiters -= 1
        if gate is not None:
            gate.enter(timeout=3600.0)  # back in line; admission gives it back after the answer
