"""The simulator's callbacks: one scheduler thread over a heap of due events (benchmarks
create 10,000 tasks, so not a thread per task) hands each to a small pool of senders.

Luma's habit is kept: a callback not answered 200 is retried 3 times, 100 ms apart.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from lumasim.tasks import SimTask

log = logging.getLogger(__name__)

CALLBACK_RETRIES, CALLBACK_RETRY_DELAY, CALLBACK_TIMEOUT, CALLBACK_SENDERS = 3, 0.1, 5.0, 8


class Callbacks:
    """Sends each task's callbacks when its state changes (at processing_at and done_at).

    `body_at(task, at)` renders the task as it stood at `at`; `enabled()` is read at each
    due event, so a test can switch callbacks off on a running simulator. Each event
    carries the task's revision: once Luma's upscale or audio reruns a generation (same
    id, a new hook), what is left of the earlier run is not sent.
    """

    def __init__(
        self,
        body_at: Callable[[SimTask, float], dict[str, Any]],
        enabled: Callable[[], bool],
        lookup: Callable[[str], SimTask | None],
    ) -> None:
        self._body_at, self._enabled, self._lookup = body_at, enabled, lookup
        self._local = threading.local()
        self._events: list[tuple[float, int, str, int]] = []  # (due, seq, task id, revision)
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._scheduler: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def schedule(self, task: SimTask, after: float = -math.inf) -> None:
        """Send the task's callbacks when due; `after`: only those due later (a task restored
        from the store, whose earlier callbacks the simulator before the restart sent)."""
        dues = [due for due in (task.processing_at, task.done_at) if due > after]
        with self._wake:
            if self._stopping or not dues:
                return
            if self._scheduler is None:
                self._pool = ThreadPoolExecutor(CALLBACK_SENDERS, thread_name_prefix="sim-callback")
                self._scheduler = threading.Thread(
                    target=self._run_scheduler, name="sim-scheduler", daemon=True
                )
                self._scheduler.start()
            for due in dues:
                heapq.heappush(self._events, (due, next(self._seq), task.id, task.revision))
            self._wake.notify()

    def halt(self) -> None:
        """No callback is sent from now on."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()

    def join(self) -> None:
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_scheduler(self) -> None:
        """Pop due events; the state reached is judged at the event's due time, not at sending."""
        while True:
            with self._wake:
                while not self._stopping and (
                    not self._events or self._events[0][0] > time.monotonic()
                ):
                    wait = self._events[0][0] - time.monotonic() if self._events else None
                    self._wake.wait(wait)
                if self._stopping:
                    return
                due, _, task_id, revision = heapq.heappop(self._events)
            task = self._lookup(task_id)
            stale = task is not None and task.revision != revision  # a rerun has begun since
            if not self._enabled() or task is None or stale or self._pool is None:
                continue
            try:
                self._pool.submit(self._deliver, task, due)
            except RuntimeError:  # the pool was shut down: we are stopping
                return

    def _deliver(self, task: SimTask, at: float) -> None:
        """Luma's habit: retry up to 3 times, 100 ms apart, while the answer is not 200."""
        try:
            body = self._body_at(task, at)
            status = 0
            for attempt in range(1 + CALLBACK_RETRIES):
                if attempt:
                    time.sleep(CALLBACK_RETRY_DELAY)
                status = self.post(task, body)
                if status == 200:
                    return
            log.warning(
                "callback for task %s (%s) not accepted: last status %s",
                task.id,
                body["state"],
                status,
            )
        except Exception as exc:  # a callback must never take the simulator down
            log.error("callback for task %s failed: %s", task.id, type(exc).__name__)

    def post(self, task: SimTask, body: dict[str, Any]) -> int:
        """One POST to the hook. Errors name the task, never the URL: it holds a secret token."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            url = task.notify_hook or ""
            return session.post(url, json=body, timeout=CALLBACK_TIMEOUT).status_code
        except requests.RequestException as exc:
            log.info("callback for task %s: %s", task.id, type(exc).__name__)
            return 0
