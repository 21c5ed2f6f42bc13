"""The callback route the upstream calls (notify_hook), and its group commit.

It finds the task by the secret token in its own URL, never by an id in the body; stores
what it got as an event; applies it forward only; and answers at once. Nobody documents what
resellers send, so any JSON is taken; what cannot be understood is kept and makes the task
due for a query. The hot path (docs/benchmarks.md, "Callback ingest"): the body is read and
parsed once, queued, and written by the store with the callbacks that arrived meanwhile.

Two doors, one answer (`answer`). A plain callback (POST, a token-shaped path, a declared
length within TRACKER_MAX_CALLBACK_BYTES, one of this service's names in Host) is answered
by `FastPath`, a WSGI layer under the request ids and ProxyFix, without Flask (measured: its
request context, session, hooks and response object were a quarter of the route's CPU); it
does what Flask's hooks would (timing, the callback counter, the two headers, JSON errors).
Anything else goes to the Flask route, which answers it with the app's own checks.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import RequestEntityTooLarge

from tracker import metrics
from tracker.db import Database
from tracker.flows.services import Services
from tracker.settings import Settings
from tracker.tasks import callback_writes, callback_writes_pg, rows
from tracker.tasks.states import Update
from tracker.upstream.parse import parse_body
from tracker.web import DATABASE_DOWN, UNEXPECTED, log_database_down, services
from tracker.web.security import HEADERS, addressed_to_us, own_names

log = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__)
RULE = "/callbacks/luma/<token>"
# what the fast path takes: the tokens this service makes (token_urlsafe) and nothing odd
_PATH = re.compile(r"/callbacks/luma/(?P<token>[A-Za-z0-9_-]{1,256})")

CallbackReply = tuple[int, dict[str, Any]]


def answer(services: Services, token: str, raw: bytes) -> tuple[CallbackReply, bool]:
    """The status and JSON body for a callback's body, and whether the body was understood."""
    update, payload = parse_body(raw)  # never raises: see parse_body and jsontext
    found = write(services.db, services.settings, token, update, payload)
    if found is None:
        return (404, {"error": "unknown callback"}), update.understood
    return (200, {"received": True, "understood": update.understood}), update.understood


@bp.post(RULE)
def luma_callback(token: str) -> ResponseReturnValue:
    svc = services()
    limit = svc.settings.max_callback_bytes
    # a declared length past the limit is refused before reading (werkzeug); a chunked body
    # is read to one byte past the limit, never whole
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    (status, body), understood = answer(svc, token, raw)
    g.callback_understood = understood  # counted after the answer (monitoring.py)
    return body, status


# -- the group commit: callbacks that arrive together are written together -------------------
# Measured under wrk (docs/benchmarks.md, "Callback ingest"): round trips, commits and (on
# SQLite) the write lock were most of a callback's cost. Callbacks arriving while others are
# written wait here; one writer a process (a second split the batches: fewer a second) hands
# every one waiting to the store's batch writer (tasks/callback_writes.py, or its _pg twin),
# one commit a batch. A caller waits for its own outcome, so an answer follows the commit.
# The writer is a thread (a greenlet under gevent), gone after IDLE seconds idle; a forked
# process starts with an empty queue and a writer of its own.

TRIES = 3  # PostgreSQL: batches a callback may go into before it is written the locked way


def write(db: Database, settings: Settings, token: str, upd: Update, payload: Any) -> bool | None:
    """Write one callback: None when no task has this token, else whether the state moved."""
    token_hash = rows.hash_token(token)
    writer = _writer(db)
    for _ in range(TRIES):
        outcome = writer.write(Callback(db, settings, token_hash, upd, payload))
        if outcome is None or isinstance(outcome, bool):
            return outcome
        if outcome is callback_writes_pg.LOCKED:  # a move, or an input naming another task
            break
    # written alone with the row locked (the row kept changing, or the write needs the lock)
    return callback_writes.write_locked(db, settings, token_hash, upd, payload)


_writers: WeakKeyDictionary[Database, GroupWriter[Callback]] = WeakKeyDictionary()


def _writer(db: Database) -> GroupWriter[Callback]:
    """The group commit of `db` (a weak key: a Database no longer used is let go)."""
    found = _writers.get(db)
    if found is None:
        batches = callback_writes_pg.write_batch if db.is_postgres else callback_writes.write_batch
        found = _writers.setdefault(db, GroupWriter(batches))
    return found


WRITERS = 1
MOST = 64  # callbacks a batch takes at most: a bound on one statement's arrays
IDLE = 5.0

Item = TypeVar("Item", bound="Waiting")


class Waiting:
    """One caller's callback: what it waits on, and what it gets back (and since when)."""

    __slots__ = ("done", "error", "outcome", "since")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.done = threading.Event()
        self.outcome: object = None
        self.error: BaseException | None = None


class GroupWriter(Generic[Item]):
    """A queue and its writers: `write(item)` returns once `write_batch` wrote the item.

    `write_batch` sets each item's `outcome`; an exception it raises is every item's (each
    caller raises a copy of its own, `_own`).
    """

    def __init__(self, write_batch: Callable[[list[Item]], None]) -> None:
        self.write_batch = write_batch
        self._reset()
        _all.add(self)

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = 0

    def write(self, item: Item) -> object:
        self._queue.put(item)
        if self._running < WRITERS:
            with self._lock:
                if self._running < WRITERS:  # a writer leaving checks the queue under this lock
                    self._running += 1
                    threading.Thread(target=self._serve, name="group-commit", daemon=True).start()
        item.done.wait()
        if item.error is not None:
            raise _own(item.error)
        return item.outcome

    def _next_batch(self) -> list[Item] | None:
        """What waits (at most MOST), or None when this writer should end."""
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE)]
                break
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running -= 1
                        return None
        while len(batch) < MOST:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self.write_batch(batch)
            except Exception as exc:  # every caller raises it: the web's 503 (or 500)
                for item in batch:
                    item.error = exc
            except BaseException:  # this writer is being stopped (the process ends)
                for item in batch:
                    item.error = RuntimeError("the group commit's writer was stopped")
                with self._lock:
                    self._running -= 1
                raise
            finally:
                for item in batch:
                    item.done.set()


def _own(error: BaseException) -> BaseException:
    """One caller's copy of its batch's exception (same type, text and writer's traceback):
    one object raised in every caller would gather all their frames in one traceback."""
    try:
        mine = copy.copy(error)  # exceptions copy through their __reduce__ (SQLAlchemy's too)
    except Exception:  # an exception class that cannot be rebuilt: the shared one, as it is
        return error
    mine.__cause__, mine.__context__ = error.__cause__, error.__context__
    mine.__suppress_context__ = error.__suppress_context__
    return mine.with_traceback(error.__traceback__)


_all: weakref.WeakSet[GroupWriter[Any]] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child: the parent's writers are not there, nor are its waiting callers."""
    for writer in list(_all):
        writer._reset()


os.register_at_fork(after_in_child=_after_fork)


class Callback(Waiting):
    """A callback waiting for its batch, and what the batch's writer needs to write it."""

    __slots__ = ("db", "payload", "settings", "token_hash", "upd")

    def __init__(
        self, db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
    ) -> None:
        super().__init__()
        self.db, self.settings, self.token_hash = db, settings, token_hash
        self.upd, self.payload = upd, payload


def callback_result(status: int, understood: bool) -> str:
    """The callback counter's label for an answer (by this route, the fast path, the gate)."""
    if status < 300:
        return "understood" if understood else "not_understood"
    if status == 404:
        return "unknown_token"
    if status == 413:
        return "too_large"
    return "error" if status >= 500 else "refused"


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastPath:
    """WSGI: a plain callback answered without Flask; every other request passed to `app`."""

    def __init__(self, app: WSGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.limit = services.settings.max_callback_bytes
        self.names = own_names(services.settings)

    def _plain(self, environ: dict[str, Any]) -> str | None:
        """The token of a callback the fast path may answer, or None."""
        if environ.get("REQUEST_METHOD") != "POST" or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if match is None or not length.isdigit() or int(length) > self.limit:
            return None
        if not addressed_to_us(environ.get("HTTP_HOST", ""), environ, self.names):
            return None
        return match["token"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        token = self._plain(environ)
        if token is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        raw = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        headers = [("Content-Type", "application/json"), *HEADERS]
        understood = True
        try:
            (status, body), understood = answer(self.services, token, raw)
        except (OperationalError, PoolTimeout) as exc:
            status, body = 503, {"error": DATABASE_DOWN}
            headers.append(("Retry-After", "5"))
            log_database_down(exc)
        except Exception:
            log.exception("unhandled error on POST %s", RULE)
            status, body = 500, {"error": UNEXPECTED}
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"  # as Flask's jsonify
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {_REASONS[status]}", headers)
        metrics.http_request("POST", RULE, status, time.perf_counter() - started)
        metrics.callback(callback_result(status, understood))
        return [data]


_REASONS = {200: "OK", 404: "NOT FOUND", 500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE"}
