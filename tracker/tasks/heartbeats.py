"""The worker heartbeat: which processes hold leases, and which of them have died.

A lease says "this task is in someone's hands until ...". When the hands are a process
killed with SIGKILL (an OOM kill, a lost machine), the lease used to be waited out: two
minutes for a query or a send, half an hour for a download, while the upstream's video
link expires within the hour. So every process that claims tasks (`tracker worker`,
`tracker poll --once`, `tracker archive --missing`) keeps a row in `workers`, named as
its leases are (`tasks.claimed_by`), and rewrites `last_seen_at` every BEAT_EVERY seconds
from a thread of its own. A lease whose holder's row is older than STALE_AFTER
(`TRACKER_WORKER_STALE_AFTER`, a minute by default) is held by nobody (`held_by_dead`).

Only an existing, stale row counts as dead: a holder that never registered (the web
process sending a task, a test) is unknown, and its leases expire on their own as before.
A clean stop deletes the row after giving the leases back; a killed process's row stays
(the dashboard shows it stale) until PRUNE_AFTER, far past any lease.

Taking over is safe for every kind of lease: a query only asks (asking twice costs
nothing), a download writes its own temporary file, and a send held by a dead process
becomes "outcome unknown" (`claims.recover_interrupted_submissions`), never a resend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from tracker import settings
from tracker.db import Database, rowcount
from tracker.tasks.models import WorkerBeat, utcnow

log = logging.getLogger(__name__)


def _stale_after() -> float:
    try:
        return settings.worker_stale_after()
    except settings.SettingsError:  # settings.load stops the process with it, naming it
        return settings.DEFAULT_STALE_AFTER


# no beat for this long: the process is taken for dead (and shown stale by GET /api/workers).
# Read at import from the environment (every process of a deployment shares it); the tests
# that kill a worker shorten it rather than wait a minute for each take-over
STALE_AFTER = _stale_after()
# six beats per STALE_AFTER: a slow database or a busy machine may miss a few
BEAT_EVERY = STALE_AFTER / 6
# rows of processes gone this long are deleted (every lease they held has long expired)
PRUNE_AFTER = 86400.0


def new_id() -> str:
    """The name a process writes on its leases: readable in logs, unique across machines."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def file_tag(worker_id: str) -> str:
    """A short, file-name-safe stand-in for a worker id (on its temporary download files)."""
    return hashlib.sha256(worker_id.encode()).hexdigest()[:12]


def stale_before(now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=STALE_AFTER)


def held_by_dead(
    column: QueryableAttribute[str | None], now: datetime | None = None
) -> ColumnElement[bool]:
    """SQL: the lease holder named in `column` has a row and it has gone stale."""
    dead = select(WorkerBeat.id).where(WorkerBeat.last_seen_at < stale_before(now))
    return column.in_(dead.scalar_subquery())


def live_tags(db: Database) -> set[str]:
    """The file tags of every process seen within STALE_AFTER."""
    with db.read() as session:
        ids = session.scalars(
            select(WorkerBeat.id).where(WorkerBeat.last_seen_at >= stale_before())
        )
        return {file_tag(worker_id) for worker_id in ids}


class Heartbeat:
    """One process's row in `workers`, kept fresh by a daemon thread while it runs.

    `paused` reports how many seconds the upstream has asked this process to wait (0 when
    it has not); `claimed` counts the tasks it took, both written with each beat.
    """

    def __init__(
        self, db: Database, worker_id: str, paused: Callable[[], float] | None = None
    ) -> None:
        self.db, self.id = db, worker_id
        self.paused = paused or (lambda: 0.0)
        self.registered = False
        self._claimed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claimed(self, count: int) -> None:
        """Count tasks this process claimed (written with the next beat)."""
        with self._lock:
            self._claimed += count

    def _values(self, now: datetime) -> dict[str, Any]:
        pause = self.paused()
        with self._lock:
            claimed = self._claimed
        return {
            "last_seen_at": now,
            "tasks_claimed": claimed,
            "paused_until": now + timedelta(seconds=pause) if pause > 0 else None,
        }

    def register(self) -> None:
        """Write the row; committed before this process takes its first lease."""
        now = utcnow()
        with self.db.write() as session:
            session.add(
                WorkerBeat(
                    id=self.id,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    **self._values(now),
                )
            )
        self.registered = True

    def beat(self) -> None:
        """Say "still here"; prune rows of processes long gone. Raises on database errors."""
        now = utcnow()
        with self.db.write() as session:
            found = rowcount(
                session.execute(
                    update(WorkerBeat).where(WorkerBeat.id == self.id).values(**self._values(now))
                )
            )
            session.execute(
                delete(WorkerBeat).where(
                    WorkerBeat.last_seen_at < now - timedelta(seconds=PRUNE_AFTER)
                )
            )
        if not found:  # pruned while the machine slept, say: a fresh row under the same name
            self.register()

    def _run(self) -> None:
        while not self._stop.wait(BEAT_EVERY):
            try:
                self.beat()
            except SQLAlchemyError as exc:  # the database restarting: the next beat will do
                log.warning("heartbeat not written (%s); trying again", type(exc).__name__)

    def start(self) -> Heartbeat:
        """Register, then beat from a daemon thread until `stop`.

        A database that is down at start does not stop the process: until a beat registers
        it, its leases are nobody's known ones and simply expire, as before heartbeats.
        """
        try:
            self.register()
        except SQLAlchemyError as exc:
            log.warning("worker %s not registered yet (%s)", self.id, type(exc).__name__)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and delete the row: call after the leases were given back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.registered:
            return
        try:
            with self.db.write() as session:
                session.execute(delete(WorkerBeat).where(WorkerBeat.id == self.id))
            self.registered = False
        except SQLAlchemyError:
            log.exception("could not remove worker %s; it shows stale from now on", self.id)

    @contextmanager
    def running(self) -> Iterator[Heartbeat]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
