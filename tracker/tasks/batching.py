"""Group commit: many callbacks written in one transaction and one commit.

Why: measured under wrk (docs/benchmarks.md, "Callback ingest"), a callback's two round trips
to PostgreSQL were most of its cost beyond a bare endpoint's: each send over loopback TCP
costs about 0.1 ms of the web process's CPU, and each commit a WAL flush on the server.
Callbacks that arrive while others are being written wait in a queue; a writer takes every
one waiting and writes them together (tracker/tasks/callbacks_pg.py: one SELECT for all their rows,
one statement that writes them all, one commit). Under load a trip's cost is shared; a lone
callback is written at once. SQLite's batch (tracker/tasks/callbacks.py) saves the write lock, the
BEGIN and the commit of each callback but the first: 0.57 ms of CPU a callback against 0.66
to 0.88 before, measured the same way.

One writer per process (`WRITERS`): under load the web process's CPU is the limit, and a
batch's round trips cost the same however many callbacks it holds, so the larger the batch
the cheaper each callback. Measured under wrk (docs/benchmarks.md, "Callback ingest"), a
second writer split the waiting callbacks into batches of 2 or 3, and one writer took 5 to
45 % more callbacks a second in each of 6 alternating runs (8 and 16 slots a process).
Batches of several web processes (or machines) do not wait for each other: a row another
one holds is skipped (optimistic.py).
A caller waits for its own callback's outcome, so an answer is sent only once it is stored.

The writer is a thread (a greenlet under gevent's monkey-patching, as the web runs), started
when a callback finds fewer than `WRITERS` running and ended after `IDLE` seconds with
nothing to write, so a Database no longer used (tests make many) keeps no thread and no
connection. A forked process starts with an empty queue and no writer, and starts its own.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks.states import Update

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


class Callback(Waiting):
    """A callback waiting for its batch, and what the batch's writer needs to write it."""

    __slots__ = ("db", "payload", "settings", "token_hash", "upd")

    def __init__(
        self, db: Database, settings: Settings, token_hash: str, upd: Update, payload: Any
    ) -> None:
        super().__init__()
        self.db, self.settings, self.token_hash = db, settings, token_hash
        self.upd, self.payload = upd, payload


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
    """One caller's copy of its batch's exception: same type, text and writer's traceback.

    Raising the one object in every caller at once would have each caller's frames added to
    the same `__traceback__`, so one caller's logged error could show another's frames.
    """
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
