"""The worker's delivery thread: POST each due delivery, signed, and record the attempt.

It runs beside the passes (`worker.run_forever` starts it) with pools of its own, so a
receiver that hangs never holds up dispatch, queries or archiving. One loop records finished
attempts and claims the next rows in batches, one transaction for many, and feeds the pools.
An attempt ends TIMEOUT after it starts, whatever the receiver does (a trickle is cut off by
a watchdog), and starts only if it can end MARGIN before its lease does: never two at once.
A target that stops answering is "down" (`Targets`): its rows wait for a probe, not
spending their retries. Slow receivers cannot starve the others: the operator's
TRACKER_NOTIFY_URL has a pool of its own; tasks' targets share a wider one where a host has
at most THREADS // 2 attempts at once (its other due rows wait a moment, DEFER_BUSY).

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
from tracker.db import Database, log_failure
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
DOWN_AFTER = 5  # attempts in a row with no answer, a 5xx or a 429: the target is down
PROBE_MAX = 10.0  # seconds between probes of a down target: 1 s, then half its time down


class Targets:
    """The targets this process found down (a key: the operator's URL, a task target's host).
    While one is, one delivery at a time (the probe) is sent and the rest wait, their tries
    unspent, as are the probes' for as long as the whole retry schedule: a receiver down
    longer than that loses nothing; one that never comes back fails its rows one by one."""

    def __init__(self) -> None:
        self.lock, self.failures = threading.Lock(), Counter[str]()
        self.probe_at: dict[str, float] = {}  # time.monotonic(); a key here is down
        self.since: dict[str, float] = {}  # when it went down
        self.probing: set[str] = set()

    def wait(self, key: str, *, take: bool = True) -> float | None:
        """None: send now (up, or as the probe, which `take` claims); else seconds to wait."""
        with self.lock:
            now, at = time.monotonic(), self.probe_at.get(key)
            if at is None or (key not in self.probing and now >= at):
                if at is not None and take:
                    self.probing.add(key)
                return None
            return max(at - now, 1.0)

    def saw(self, key: str, trouble: bool | None) -> str | None:
        """An attempt's outcome (None: it says nothing of the target); "down" or "up" when
        the target just went down or came back."""
        with self.lock:
            self.probing.discard(key)
            if not trouble:
                if trouble is False:
                    self.failures.pop(key, None)
                    self.since.pop(key, None)
                    return "up" if self.probe_at.pop(key, None) is not None else None
                return None
            if len(self.failures) > 10_000:  # hosts seen once: forget them, not grow forever
                self.failures.clear()
            self.failures[key] += 1
            if self.failures[key] < DOWN_AFTER:
                return None
            now = time.monotonic()
            since = self.since.setdefault(key, now)
            self.probe_at[key] = now + min(PROBE_MAX, max(1.0, (now - since) / 2))
            return "down" if since == now else None

    def spare(self, key: str, total: float) -> float | None:
        """A failure while `key` is down, for up to `total` s (the whole retry schedule),
        spends no try: the seconds until its next probe; None: it counts."""
        with self.lock:
            now, since = time.monotonic(), self.since.get(key)
            if since is None or now - since > total:
                return None
            return max(self.probe_at[key] - now, 1.0)


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
        self.targets = Targets()
        self._local = threading.local()

    def run_forever(self) -> None:
        """Until `stopping`: claim, send and record in batches, keeping every pool busy."""
        while not self.stopping.is_set():
            try:
                self._turn(fair=True)
            except Exception as exc:  # the database restarting, say: recorded later
                log_failure(log, exc, "recording or claiming deliveries failed; trying again")
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
        if "global" in room and self.targets.wait(self.settings.notify_url, take=False):
            room["global"] = 0  # the operator's target is down: its rows wait for the probe
        elif "global" in room and self.settings.notify_url in self.targets.probe_at:
            room["global"] = min(room["global"], 1)  # the probe is due: one row
        if not self.finished and not any(n > 0 for n in room.values()):
            return 0
        with self.db.write_connection() as conn:  # Core: a Session's bookkeeping costs more
            states = queue.record(conn, self.settings, self.owner, self.finished)
            busy = self.hosts if fair else None
            claimed = queue.claim(conn, self.owner, room, busy, self.per_host)
        for outcome in self.finished:
            item = outcome.item
            if outcome.wait is not None:  # waits for its target: no attempt to log
                continue
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
        # the operator's rows are due but wait for their down target: not a reason to spin
        least = min(interval, self.targets.wait(self.settings.notify_url, take=False) or 0.01)
        with suppress(Exception):  # the database restarting, say
            if due := queue.next_due(self.db):
                return min(interval, max(least, (due - utcnow()).total_seconds()))
        return interval

    def close(self) -> None:
        self.stopping.set()
        for pool in self.pools.values():
            pool.shutdown(wait=True)
        self.deadlines.close()

    def deliver(self, item: Claimed) -> Attempt:
        """One attempt at one delivery (never raises): what to record. Made only if it can end
        (TIMEOUT) MARGIN before its lease does; else its lease is given back, no try counted."""
        at, started = utcnow(), time.monotonic()
        if started + queue.TIMEOUT + queue.MARGIN > item.lease_ends:
            return Attempt(item, None, False, "not sent: lease too short", 0)
        key = item.target if item.target_kind == "global" else queue.host_of(item.target)
        if (wait_for := self.targets.wait(key)) is not None:
            return Attempt(item, None, False, "waits: its target is down", 0, wait_for)
        status: int | None = None
        try:
            status, text = self._post(item, started + queue.TIMEOUT)
        except Exception as exc:  # a bug must not kill the thread: the attempt says what
            log.exception("delivery %s failed unexpectedly", item.webhook_id)
            text = f"error: {type(exc).__name__}"
        latency = int((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        unsent = status is None and text.startswith("not sent")  # says nothing of the target
        trouble = None if unsent else status is None or status >= 500 or status == 429
        if change := self.targets.saw(key, trouble):
            log.warning(
                "webhook target %s is %s%s",
                queue.host_of(item.target),
                change,
                ": its deliveries wait, one probe at a time" if change == "down" else "",
            )
        spare = None if ok else self.targets.spare(key, sum(self.settings.notify_retry_schedule))
        record = queue.attempt_record(at, status, latency, redact(text))
        return Attempt(item, record, ok, str(status or text), latency, spare)

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
