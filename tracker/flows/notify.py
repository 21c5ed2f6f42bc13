"""The worker's delivery thread: POST each due delivery, signed, and record the attempt.

It runs beside the passes (`worker.run_forever` starts it) with a small pool of its own,
so a receiver that hangs holds one of its threads for at most TIMEOUT and never holds up
dispatch, queries or archiving. New rows are claimed as threads free up, so one slow
receiver does not stop the others' events either.

Each attempt: the body's media paths become signed links, the headers are signed with every
secret, and the POST follows no redirect (a 3xx is a failed attempt). A task's own
`notify_url` goes through the address guard every time (`netguard`, the connection pinned to
the checked address, so DNS rebinding gains nothing) unless TRACKER_NOTIFY_ALLOW_PRIVATE=1;
the global TRACKER_NOTIFY_URL is the operator's own and may be private. Error texts name a
host at most, never the URL (it may carry the receiver's token).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from urllib.parse import urlsplit

import requests
from urllib3.util import Timeout

from tracker import signing
from tracker.db import Database
from tracker.redact import redact
from tracker.settings import Settings
from tracker.storage import netguard
from tracker.tasks import deliveries as queue
from tracker.tasks.deliveries import Claimed
from tracker.tasks.models import utcnow

log = logging.getLogger(__name__)

THREADS = 8
RECLAIM_EVERY = 0.2  # seconds between looks for new rows while sends are in flight


class Sender:
    """Sends deliveries for one worker process (`owner`: its heartbeat id, on the leases)."""

    def __init__(
        self, settings: Settings, db: Database, owner: str, *, threads: int = THREADS
    ) -> None:
        self.settings, self.db, self.owner, self.width = settings, db, owner, threads
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="deliver")
        self._local = threading.local()

    # -- the loops ----------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Until `stopping`: keep up to `width` sends in flight, claiming as threads free up."""
        in_flight: set[Future[None]] = set()
        while not self.stopping.is_set():
            try:
                room = self.width - len(in_flight)
                claimed = queue.claim_deliveries(self.db, self.owner, room) if room > 0 else []
            except Exception:  # the database restarting, say
                log.exception("claiming deliveries failed; trying again shortly")
                claimed = []
            in_flight |= {self.pool.submit(self.deliver, item) for item in claimed}
            if in_flight:
                _done, in_flight = wait(in_flight, RECLAIM_EVERY, return_when=FIRST_COMPLETED)
            else:
                self.stopping.wait(self._idle_wait())
        wait(in_flight)

    def run_once(self) -> int:
        """Send everything due now and wait for it (`tracker poll --once`, tests)."""
        sent = 0
        while claimed := queue.claim_deliveries(self.db, self.owner, self.width):
            for future in [self.pool.submit(self.deliver, item) for item in claimed]:
                future.result()
            sent += len(claimed)
        return sent

    def _idle_wait(self) -> float:
        try:
            due = queue.next_due(self.db)
        except Exception:
            return self.settings.worker_interval
        interval = self.settings.worker_interval
        soon = interval if due is None else (due - utcnow()).total_seconds()
        return min(interval, max(0.01, soon))

    def close(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=True)

    # -- one attempt ----------------------------------------------------------------------------

    def deliver(self, item: Claimed) -> None:
        """One attempt at one delivery, recorded whatever happens (never raises)."""
        at, started = utcnow(), time.monotonic()
        status: int | None = None
        try:
            status, text = self._post(item)
        except Exception as exc:  # a bug must not kill the thread: the attempt says what
            log.exception("delivery %s failed unexpectedly", item.webhook_id)
            text = f"error: {type(exc).__name__}"
        latency = int((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        attempt = queue.attempt_record(at, status, latency, redact(text))
        try:
            state = queue.finish(self.db, self.settings, item.id, self.owner, attempt, ok)
        except Exception:  # the lease runs out and another worker sends it (at least once)
            log.exception("could not record delivery %s", item.webhook_id)
            return
        host = urlsplit(item.target).hostname or "?"
        log.info(
            "%s %s to %s: %s in %d ms -> %s",
            *(item.type, item.webhook_id, host, status or text, latency, state),
        )

    def _post(self, item: Claimed) -> tuple[int | None, str]:
        secrets = signing.signing_secrets(self.settings)
        if not secrets:
            return None, "not sent: TRACKER_NOTIFY_SECRET is not set"
        now = time.time()
        body = json.dumps(
            signing.sign_links(self.settings, json.loads(item.payload), now),
            ensure_ascii=True,
            separators=(",", ":"),
        )
        headers = signing.headers(secrets, item.webhook_id, body, now)
        try:
            session = self._session(item)
        except netguard.FetchRefused as exc:
            return None, f"not sent: {exc}"
        except netguard.FetchError as exc:
            return None, f"not sent: {exc}"
        # one deadline for the whole exchange: requests passes a urllib3 Timeout through
        # (adapters.send), though its stubs accept only numbers and pairs
        deadline = Timeout(total=queue.TIMEOUT)
        try:
            with session.post(
                item.target,
                data=body.encode(),
                headers=headers,
                timeout=deadline,  # type: ignore[arg-type]  # requests takes a urllib3 Timeout
                allow_redirects=False,
                stream=True,
            ) as response:
                raw = response.raw.read(1024, decode_content=True) or b""
                return response.status_code, raw.decode("utf-8", "replace")
        except requests.Timeout:
            return None, f"no answer within {queue.TIMEOUT:g} s"
        except requests.RequestException as exc:
            return None, f"could not connect ({type(exc).__name__})"
        finally:
            if item.target_kind == "task":
                session.close()

    def _session(self, item: Claimed) -> requests.Session:
        """The global target: one kept-alive session per thread. A task's: guarded, pinned."""
        if item.target_kind == "task":
            guard = netguard.Guard(allow_private=self.settings.notify_allow_private)
            return netguard.pinned_session_for(item.target, guard)
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # no proxy from the environment
        return session
