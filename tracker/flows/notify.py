"""The worker's delivery thread: POST each due delivery, signed, and record the attempt.

It runs beside the passes (`worker.run_forever` starts it) with pools of its own, so a
receiver that hangs never holds up dispatch, queries or archiving. One loop records finished
attempts and claims the next rows in batches, one transaction for many, and feeds the pools.

An attempt ends TIMEOUT after it starts, whatever the receiver does (connect, send, headers,
body: a receiver that trickles a line every few seconds is cut off, its sockets shut by a
watchdog), and starts only if it can end MARGIN before its lease does: never two at once.
Slow receivers cannot starve the others: the operator's TRACKER_NOTIFY_URL has a pool of its
own; tasks' targets share a wider one where a host has at most THREADS // 2 attempts at once
(its other due rows wait a moment, DEFER_BUSY, while the rest go ahead).

Each attempt: the body's media paths become signed links, the headers are signed with every
secret, and the POST follows no redirect (a 3xx is a failed attempt). A task's own
`notify_url` goes through the address guard every time (`netguard`, the connection pinned to
the checked address, so DNS rebinding gains nothing) unless TRACKER_NOTIFY_ALLOW_PRIVATE=1;
the global TRACKER_NOTIFY_URL is the operator's own and may be private. Error texts name a
host at most, never the URL (it may carry the receiver's token).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress

import requests
import urllib3.exceptions

from tracker import shutdown, signing
from tracker.db import Database
from tracker.redact import redact
from tracker.settings import Settings
from tracker.storage import netguard
from tracker.tasks import deliveries as queue
from tracker.tasks.deliveries import Attempt, Claimed
from tracker.tasks.models import utcnow

log = logging.getLogger(__name__)

THREADS = 8  # the operator's target; tasks' own targets get TASK_LANE times as many
TASK_LANE = 4  # and a host of theirs has at most THREADS // 2 attempts at once
BACKLOG = 7  # batches for the operator's target claimed beyond its threads (quick ones)
RECLAIM_EVERY = 0.2  # seconds between looks for new rows while sends are in flight
BROKEN = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException)
TIMEOUTS = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


class Sender:
    """Sends deliveries for one worker process (`owner`: its heartbeat id, on the leases)."""

    def __init__(
        self, settings: Settings, db: Database, owner: str, *, threads: int = THREADS
    ) -> None:
        self.settings, self.db, self.owner = settings, db, owner
        self.width = {"global": threads, "task": threads * TASK_LANE}
        self.pace = 1.0  # seconds an attempt at the operator's target takes, lately
        self.per_host = max(1, threads // 2)
        self.pools = {k: ThreadPoolExecutor(n, f"deliver-{k}") for k, n in self.width.items()}
        self.stopping = threading.Event()
        self.deadlines = shutdown.Deadlines()
        self.in_flight: dict[Future[Attempt], Claimed] = {}
        self.hosts: Counter[str] = Counter()  # tasks' targets in flight, by host
        self.finished: list[Attempt] = []  # not recorded yet
        self.looked: dict[str, float] = {}  # each lane's last claim (none: look now)
        self._local = threading.local()

    # -- the loop ---------------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Until `stopping`: claim, send and record in batches, keeping every pool busy."""
        while not self.stopping.is_set():
            try:
                self._turn(fair=True)
            except Exception:  # the database restarting, say: the attempts are recorded later
                log.exception("recording or claiming deliveries failed; trying again shortly")
                self.stopping.wait(1.0)
                continue
            if self.in_flight:
                wait(self.in_flight, RECLAIM_EVERY, return_when=FIRST_COMPLETED)
            else:
                self.stopping.wait(self._idle_wait())
                self.looked.clear()
        # stopping: sends not started are not made (their leases given back)
        queued = [self.in_flight.pop(f) for f in list(self.in_flight) if f.cancel()]
        wait(self.in_flight)
        try:
            self._turn(fair=True, claiming=False)
            queue.release(self.db, self.owner, [item.id for item in queued])
        except Exception:
            log.exception("could not record the last attempts; their leases run out")

    def run_once(self) -> int:
        """Send everything due now and wait for it (`tracker poll --once`, tests)."""
        sent = 0
        while True:
            self.looked.clear()  # every turn looks for rows
            sent += self._turn(fair=False)
            if not self.in_flight:
                return sent
            wait(self.in_flight, return_when=FIRST_COMPLETED)

    def _turn(self, *, fair: bool, claiming: bool = True) -> int:
        """Record what finished and claim what fits, in one transaction; how many claimed."""
        for future in [f for f in self.in_flight if f.done()]:
            item = self.in_flight.pop(future)
            if item.target_kind == "task":
                self.hosts[queue.host_of(item.target)] -= 1
            self.finished.append(future.result())
        # claimed, not finished, at most: batches wait for the operator's pool while its attempts
        # are quick; a lane looks again at once after a full batch, else every RECLAIM_EVERY
        running, now = Counter(i.target_kind for i in self.in_flight.values()), time.monotonic()
        most = {"global": (1 + (BACKLOG if self.pace < 1 else 1)) * self.width["global"]}
        room = {
            kind: most.get(kind, n) - running[kind]
            for kind, n in self.width.items()
            if claiming and now - self.looked.get(kind, 0.0) >= RECLAIM_EVERY
        }
        if not self.finished and not any(n > 0 for n in room.values()):
            return 0
        with self.db.write_connection() as conn:  # Core: a Session's bookkeeping costs more
            states = queue.record(conn, self.settings, self.owner, self.finished)
            busy = self.hosts if fair else None
            claimed = queue.claim(conn, self.owner, room, busy, self.per_host)
        for outcome in self.finished:
            item = outcome.item
            if item.target_kind == "global" and outcome.record:
                self.pace = 0.8 * self.pace + 0.2 * outcome.latency_ms / 1000
            log.info(
                "%s %s to %s: %s in %d ms -> %s",
                *(item.type, item.webhook_id, queue.host_of(item.target), outcome.said),
                *(outcome.latency_ms, states.get(item.id)),
            )
        self.finished = []
        self.hosts.update(queue.host_of(i.target) for i in claimed if i.target_kind == "task")
        got = Counter(item.target_kind for item in claimed)
        self.looked.update({k: 0.0 if got[k] >= n > 0 else now for k, n in room.items()})
        for item in claimed:
            self.in_flight[self.pools[item.target_kind].submit(self.deliver, item)] = item
        return len(claimed)

    def _idle_wait(self) -> float:
        interval = self.settings.worker_interval
        with suppress(Exception):  # the database restarting, say
            if due := queue.next_due(self.db):
                return min(interval, max(0.01, (due - utcnow()).total_seconds()))
        return interval

    def close(self) -> None:
        self.stopping.set()
        for pool in self.pools.values():
            pool.shutdown(wait=True)
        self.deadlines.close()

    # -- one attempt ------------------------------------------------------------------------------

    def deliver(self, item: Claimed) -> Attempt:
        """One attempt at one delivery (never raises): what to record. Made only if it can end
        (TIMEOUT) MARGIN before its lease does; else its lease is given back, no try counted."""
        at, started = utcnow(), time.monotonic()
        if started + queue.TIMEOUT + queue.MARGIN > item.lease_ends:
            return Attempt(item, None, False, "not sent: lease too short", 0)
        status: int | None = None
        try:
            status, text = self._post(item, started + queue.TIMEOUT)
        except Exception as exc:  # a bug must not kill the thread: the attempt says what
            log.exception("delivery %s failed unexpectedly", item.webhook_id)
            text = f"error: {type(exc).__name__}"
        latency = int((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        record = queue.attempt_record(at, status, latency, redact(text))
        return Attempt(item, record, ok, str(status or text), latency)

    def _post(self, item: Claimed, ends: float) -> tuple[int | None, str]:
        secrets = signing.signing_secrets(self.settings)
        if not secrets:
            return None, "not sent: TRACKER_NOTIFY_SECRET is not set"
        now = time.time()
        payload = signing.sign_links(self.settings, json.loads(item.payload), now)
        body = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
        headers = signing.headers(secrets, item.webhook_id, body, now)
        status: int | None = None
        session: requests.Session | None = None
        with self.deadlines.attempt(ends, netguard.watch) as cut:
            try:
                session = self._session(item)
                left = ends - time.monotonic()
                if left <= 0:  # a name that took the whole time to resolve
                    return None, f"not sent: its name took over {queue.TIMEOUT:g} s to resolve"
                with session.post(
                    item.target,
                    data=body.encode(),
                    headers=headers,
                    timeout=(left, left),
                    allow_redirects=False,
                    stream=True,
                ) as response:
                    status = response.status_code
                    raw = response.raw.read(1024, decode_content=True) or b""
                if not cut.passed:
                    return status, raw.decode("utf-8", "replace")
            except netguard.FetchError as exc:  # FetchRefused too: a guarded host
                return None, f"not sent: {exc}"
            except (*BROKEN, OSError) as exc:
                if not (cut.passed or isinstance(exc, TIMEOUTS)):
                    if status is not None:  # a receiver that broke off its answer
                        return None, f"answered {status}, then broke off ({type(exc).__name__})"
                    return None, f"could not connect ({type(exc).__name__})"
            finally:
                if item.target_kind == "task" and session is not None:
                    session.close()
        return None, f"no answer within {queue.TIMEOUT:g} s"

    def _session(self, item: Claimed) -> requests.Session:
        """The global target: one kept-alive session per thread. A task's: guarded, pinned."""
        if item.target_kind == "task":
            guard = netguard.Guard(allow_private=self.settings.notify_allow_private)
            return netguard.pinned_session_for(item.target, guard)
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = netguard.pinned_session_for(item.target, None)
        return session
