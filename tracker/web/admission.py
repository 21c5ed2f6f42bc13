"""How many requests run the app at once in a gevent worker, what they wait for first, and
how a `GET /api/tasks/<id>?wait=SECONDS` waits without holding a place.

gevent gives every connection a greenlet, so slow clients cost little: their headers and
bodies are waited for cooperatively. But letting every connection into the app at once
is worse than gunicorn's threads were under load: on SQLite every callback wants the one write
lock, and 16 of them per process retrying for it (with the process often off a shared CPU)
starve some past their lock wait, where a bounded thread pool queued them in order (measured
in docs/benchmarks.md). So a greenlet first reads its request's body whole, whatever its
framing (Content-Length or chunked), within BODY_WAIT seconds in all (a large body gets
BODY_RATE's allowance too): a byte-a-second sender waits here holding nothing, and gets a 408
when its body is late (issue 23: eight chunked drips held every slot). Bodies past READ_AHEAD
wait in a temporary file; one declared past the route's limit is left to the app's 413.
Then it takes one of `slots` and runs the app. The slot is given back when the app returns,
before a long answer (a video) is streamed, so slow readers hold no slot either. A request
that waits QUEUE_WAIT for a slot (every slot waiting on a locked database, say) gets a 503
with Retry-After; /healthz never waits for one. Those 503s and 408s are counted in /metrics
like the app's own answers (`_count`), so a busy service shows in its error rate.

Callbacks keep slots of their own (`callback_slots`, a quarter): the rest (API, dashboard,
waking `?wait=` waiters) never hold those, so they cannot take every slot from the upstream's
callbacks (issue 23: 512 waiters waking together queued ahead of a callback until its 503).

`?wait=`: the API answers as soon as the task is final, or after the wait. A waiter reads one
column of one row every POLL_EVERY seconds, without a slot, and sleeps in between (cooperative
under gunicorn's gevent worker: no OS thread held). It gives its slot back while it sleeps and
takes one again, in turn, before it answers. Waiters are capped per process (MAX_WAITERS; a
few under a thread-per-request server, where each does hold a thread): past the cap the answer
comes at once with the current state and `X-Tracker-Wait: skipped`, so a client asks again.
"""

from __future__ import annotations

import io
import json
import math
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from tracker import metrics
from tracker.db import Database
from tracker.flows import validate
from tracker.settings import Settings
from tracker.tasks.models import FINAL_STATES, Task
from tracker.web.callbacks import RULE as CALLBACK_RULE
from tracker.web.callbacks import callback_result

READ_AHEAD = 1_000_001  # bodies up to this many bytes are read into memory, larger ones spooled
BODY_WAIT = 5.0  # seconds a request's body may take in all, before it takes a slot; then 408
BODY_RATE = 100_000  # bytes a second: a large body's allowance beyond BODY_WAIT, as it arrives
CHUNK = 65_536  # bytes asked for at once while reading a body
QUEUE_WAIT = 2.0  # seconds a request waits for a slot, then 503 (the sender retries)
BUSY = "<busy>"  # the route label of a request turned away before routing (not a callback)
CALLBACKS = CALLBACK_RULE.removesuffix("luma/<token>")  # what admission counts as a callback

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Gate:
    """At most `slots` holders, served first come, first served; `kept` of them for holders
    that say `callback`: the others hold at most `slots - kept` at once.

    gevent's Semaphore lets a newcomer take a free slot ahead of those already waiting, and
    on a busy CPU some requests then waited past two seconds (measured); here a released
    slot goes to the longest waiter that may take it. Built on `threading`, which gevent has
    patched by the time wsgi.py runs, so it works for threads and greenlets alike.
    """

    def __init__(self, slots: int, kept: int = 0) -> None:
        self._free = slots
        self._cap = slots - kept  # what holders other than callbacks may hold at once
        self._others = 0
        self._waiting: deque[tuple[threading.Event, bool]] = deque()
        self._lock = threading.Lock()

    def _may(self, callback: bool) -> bool:
        return self._free > 0 and (callback or self._others < self._cap)

    def _take(self, callback: bool) -> None:
        self._free -= 1
        self._others += not callback

    def enter(self, timeout: float, callback: bool = False) -> bool:
        """Take a slot, waiting at most `timeout` seconds; False if none came."""
        with self._lock:
            # a free slot that one already waiting may take is never left free (leave())
            if self._may(callback):
                self._take(callback)
                return True
            turn = (threading.Event(), callback)
            self._waiting.append(turn)
        if turn[0].wait(timeout):  # the slot is handed over by leave()
            return True
        with self._lock:
            if turn[0].is_set():  # handed over just as the wait ended
                return True
            self._waiting.remove(turn)
            return False

    def leave(self, callback: bool = False) -> None:
        with self._lock:
            self._free += 1
            self._others -= not callback
            for turn in list(self._waiting):  # in arrival order, to each that may take one
                if self._may(turn[1]):
                    self._waiting.remove(turn)
                    self._take(turn[1])
                    turn[0].set()


def callback_slots(slots: int) -> int:
    """The slots only callbacks may take: a quarter, at least one while one is left."""
    return min(slots - 1, max(1, slots // 4))


def limit(app: WSGIApp, slots: int, settings: Settings | None = None) -> WSGIApp:
    """`app`, run by at most `slots` requests at once, in the order they came, each with its
    body read first. `settings` (else the Flask app's own) give the bodies' limits."""
    gate = Gate(slots, callback_slots(slots))
    services = getattr(app, "extensions", {}).get("tracker")  # a Flask app: its services
    limits = settings or (services.settings if services else Settings)
    # one byte past each limit, so that the app tells "too long" (413) from "at the limit"
    to_callbacks, to_others = limits.max_callback_bytes + 1, limits.max_body_bytes + 1

    def admitted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (path := str(environ.get("PATH_INFO", ""))) == "/healthz":
            return app(environ, start_response)  # touches nothing: never waits behind others
        callback = path.startswith(CALLBACKS)
        started = time.perf_counter()
        late = _read_body(environ, to_callbacks if callback else to_others)
        if late:
            _count(environ, late, time.perf_counter() - started)
            return _refuse(start_response, late)
        waited = time.perf_counter()
        if not gate.enter(QUEUE_WAIT, callback):
            _count(environ, 503, time.perf_counter() - waited)
            return _refuse(start_response, 503)
        # a request that sleeps (GET /api/tasks/<id>?wait=, `until_final`) gives its slot
        # back while it sleeps and takes one again before it answers
        environ["tracker.gate"] = gate
        try:
            return app(environ, start_response)
        finally:
            gate.leave(callback)

    return admitted


def _count(environ: dict[str, Any], status: int, seconds: float) -> None:
    """The app never ran, so no route template is known: a callback is labelled by its route's
    template (never its path, which holds the task's token), anything else as BUSY."""
    method = str(environ.get("REQUEST_METHOD", ""))
    if str(environ.get("PATH_INFO", "")).startswith(CALLBACK_RULE.removesuffix("<token>")):
        metrics.http_request(method, CALLBACK_RULE, status, seconds)
        metrics.callback(callback_result(status, understood=True))
    else:
        metrics.http_request(method, BUSY, status, seconds)


_REFUSALS = {
    503: ("503 Service Unavailable", "the service is busy; try again shortly"),
    408: ("408 Request Timeout", f"the request's body did not arrive within {BODY_WAIT:g} s"),
    400: ("400 Bad Request", "the request's body could not be read"),
}


def _refuse(start_response: Callable[..., Any], status: int) -> Iterable[bytes]:
    line, message = _REFUSALS[status]
    body = json.dumps({"error": message}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    # a body cut off mid-way leaves the connection unusable (gunicorn closes it)
    headers.append(("Retry-After", "5") if status == 503 else ("Connection", "close"))
    start_response(line, headers)
    return [body]


def _read_body(environ: dict[str, Any], most: int) -> int | None:
    """Read the request's body whole, at most `most` bytes, within its deadline, and put it
    back as one of a known length; None when done, else the status that refuses it (408:
    late; 400: cut off or malformed). A declared length past `most` is left unread (413)."""
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    length = str(environ.get("CONTENT_LENGTH") or "0")
    if not length.isdigit():
        return None  # the app answers a bad length
    wanted = most if chunked else int(length)
    if wanted <= 0 or wanted > most:
        return None
    stream = environ["wsgi.input"]
    body: Any = io.BytesIO()  # the app reads it after this returns
    if wanted > READ_AHEAD:  # in memory up to READ_AHEAD, then a file (closed when collected)
        body = tempfile.SpooledTemporaryFile(READ_AHEAD)  # noqa: SIM115
    got, deadline = 0, time.monotonic() + BODY_WAIT
    while got < wanted:
        left = deadline + got / BODY_RATE - time.monotonic()
        if left <= 0:
            return 408
        try:
            data = _within(left, stream.read, min(CHUNK, wanted - got))
        except Exception:  # a malformed chunk, a client gone: gunicorn's errors
            return 400
        if data is None:
            return 408
        if not data:
            break  # the end of a chunked body, or a client that hung up sent less
        body.write(data)
        got += len(data)
    body.seek(0)
    environ["wsgi.input"] = body
    environ["CONTENT_LENGTH"] = str(got)
    environ.pop("HTTP_TRANSFER_ENCODING", None)  # read whole: the app sees a plain length
    return None


def _within(seconds: float, read: Callable[[int], bytes], size: int) -> bytes | None:
    """`read(size)`, or None past `seconds` (under gevent; elsewhere, checked between reads)."""
    if not cooperative():
        return read(size)
    gevent = sys.modules["gevent"]  # imported by its worker (cooperative): untyped, so Any
    data: bytes | None = gevent.with_timeout(seconds, read, size, timeout_value=None)
    return data


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
