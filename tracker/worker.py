"""The worker: sends queued tasks and polls the ones that went quiet.

Callbacks get lost (a reseller never sends one, a deploy drops one, PUBLIC_BASE_URL is
unset), and the upstream limits how many tasks may run at once. So each pass:

1. a task left in `submitting` by a crash gets "outcome unknown" (never resent on our own);
2. tasks with no final state after TRACKER_TASK_TIMEOUT become `timed_out`;
3. queued tasks are sent oldest first while lifecycle says a slot is free;
4. due pending/processing tasks are claimed with a lease and queried, at most
   TRACKER_POLL_CONCURRENCY requests at once, in batches where the upstream answers them;
   only tasks of the configured dialect (LUMA_API_FLAVOR): another API cannot answer
   for the rest, so they keep their state (and are not timed out) until it is back;
5. the credit balance is read, at most once a minute (`credits.refresh`, Luma only);
6. a few finished videos are archived (`media.archive_due`) while their links are fresh.

Every claim, lease and backoff is the scheduler's (`scheduler.claims`, `scheduler.sweeps`,
`scheduler.timing`), every state change lifecycle's: this module runs the passes, talks to
the upstream from a thread pool and hands the answers over. A worker killed mid-pass leaves
leases that expire, or that others take over as soon as its heartbeat (`heartbeat`, a row
in `workers`) goes stale.

Outgoing webhooks are sent by a thread of their own (`webhooks.sender`), as archival has
one: a receiver that hangs holds up neither the passes nor the downloads.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.exc import DBAPIError

from . import credits, dispatch, heartbeat, lifecycle, media, metrics, redact, shutdown, webhooks
from .db import Database
from .models import StateCount, Task, utcnow
from .parse import Update
from .scheduler import claims, sweeps, timing
from .scheduler.claims import Job
from .services import make_client, warn_about
from .settings import Settings
from .states import RANK, Source, TaskState
from .upstream import APIStatusError, LumaClient, RateLimitError, UpstreamError
from .webhooks.sender import Sender

log = logging.getLogger(__name__)

COUNTS = ("dispatched", "polled", "timed_out", "recovered", "archived", "errors")
BATCH_SIZE = 50
BATCH_REPROBE = 600.0  # an upstream without a usable batch endpoint is asked again after this
COUNTER_ORDER = (case(RANK, value=StateCount.state), StateCount.state)


@dataclass
class Result:
    """What the upstream said about one task: an answer, or the error that took its place."""

    task_id: int
    update: Update | None = None
    body: Any = None
    error: UpstreamError | None = None


@dataclass
class Manners:
    """What this process learned about one upstream, shared by every pass and thread."""

    paused_until: dict[str, float] = field(default_factory=dict)  # "query"/"create": monotonic
    batch_off_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pause(self, what: str, seconds: float) -> None:
        with self.lock:
            until = max(self.paused_until.get(what, 0.0), time.monotonic() + seconds)
            self.paused_until[what] = until

    def pause_left(self, what: str = "query") -> float:
        return max(0.0, self.paused_until.get(what, 0.0) - time.monotonic())

    def use_batch(self) -> bool:
        return time.monotonic() >= self.batch_off_until

    def no_batch(self) -> None:
        if self.use_batch():
            log.info("the upstream has no usable batch endpoint: asking one task at a time")
        self.batch_off_until = time.monotonic() + BATCH_REPROBE


_manners: dict[str, Manners] = {}
_manners_lock = threading.Lock()


def manners_for(base_url: str) -> Manners:
    with _manners_lock:
        return _manners.setdefault(base_url, Manners())


class Worker:
    """One process's worker: its name on leases, its thread pool, its stop flag."""

    def __init__(self, settings: Settings, db: Database, client: LumaClient) -> None:
        self.settings, self.db, self.client = settings, db, client
        self.name = heartbeat.new_id()
        self.stopping = threading.Event()
        self.manners = manners_for(client.base_url)
        # registered (started) by run_forever and run_once; named as this worker's leases
        self.heartbeat = heartbeat.Heartbeat(db, self.name, paused=self._paused_for)
        self.pool = ThreadPoolExecutor(settings.poll_concurrency, thread_name_prefix="poll")
        self.counts = dict.fromkeys(COUNTS, 0)  # this pass's; only the pass's thread counts

    def run_once(self, *, archive: bool = True) -> dict[str, int]:
        """One pass; the counts say what it did. Upstream trouble never raises from here.

        `archive=False` when a thread of its own archives (run_forever): a large download
        must not hold up the polling of everything else.
        """
        self.counts = dict.fromkeys(COUNTS, 0)
        self.counts["recovered"] = sweeps.recover_interrupted_submissions(self.db)
        self.counts["timed_out"] = sweeps.time_out_overdue(self.db, self.settings)
        self._dispatch()
        self._poll(cutoff=utcnow())
        if not self.stopping.is_set():
            credits.refresh(self.db, self.settings, self.client)  # once a minute at most
        if archive and not self.stopping.is_set():
            self.counts["archived"] = media.archive_due(
                self.db, self.settings, self.client, holder=self.heartbeat
            )
        return dict(self.counts)

    def _paused_for(self) -> float:
        """Seconds until the upstream lets this worker query and create again (0: it does)."""
        return max(self.manners.pause_left("query"), self.manners.pause_left("create"))

    def _dispatch(self) -> None:
        """One claim, then its send: a claim's lease never has to outlive other sends."""
        while not self.stopping.is_set() and not self.manners.pause_left("create"):
            claimed = claims.claim_for_dispatch(self.db, self.settings, limit=1, owner=self.name)
            if not claimed:
                return
            self.heartbeat.claimed(len(claimed))
            task = dispatch.send(self.db, self.settings, self.client, *claimed[0])
            if task.state == TaskState.QUEUED and task.next_check_at:  # 429 or refused: "not now"
                # no other create before this one's turn: Retry-After kept, oldest still first
                wait_s = (task.next_check_at - utcnow()).total_seconds()
                self.manners.pause("create", wait_s)
            failed = task.state in (TaskState.QUEUED, TaskState.REJECTED)
            self.counts["errors" if failed else "dispatched"] += 1

    def _poll(self, cutoff: datetime) -> None:
        """Query what was due when the pass began; keep the pool busy, hoard no claims.

        Pool threads only talk HTTP; this thread does every write, so the process is a single
        writer: its threads never wait on each other in SQLite's busy handler.
        """
        width = self.settings.poll_concurrency
        futures: dict[Future[list[Result]], Job] = {}
        more = True
        while True:
            if more and len(futures) <= width and not self._held_back():
                batch = self.client.dialect.has_batch and self.manners.use_batch()
                step = BATCH_SIZE if batch else 1
                claimed = self._claim(cutoff, (2 * width - len(futures)) * step)
                more = bool(claimed)
                for i in range(0, len(claimed), step):
                    job = claimed[i : i + step]
                    futures[self.pool.submit(self._fetch, job, step > 1)] = job
            if not futures:
                return
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            results = [result for future in done for result in future.result()]
            self._record(results)
            asked = {result.task_id for result in results}
            unasked = [
                pair for future in done for pair in futures.pop(future) if pair[0] not in asked
            ]
            if unasked:  # held back (stopping, Retry-After) before they were asked
                self.release(unasked)

    def _held_back(self) -> bool:
        return self.stopping.is_set() or self.manners.pause_left("query") > 0

    def _claim(self, cutoff: datetime, limit: int) -> Job:
        job = claims.claim_polls(self.db, self.settings, self.name, cutoff, limit)
        self.heartbeat.claimed(len(job))
        return job

    def release(self, job: Job | None = None) -> None:
        """Give back the leases this worker holds on tasks it will not query (all when None)."""
        claims.release_polls(self.db, self.name, job)

    def _record(self, results: list[Result]) -> None:
        """Answers through lifecycle.apply, failures through lifecycle.note_poll_failure.

        Answers that arrive together share a transaction: a query's cost to the worker is
        mostly the database's. If that fails (a deadlock PostgreSQL broke), one by one.
        """
        answers = [r for r in results if r.update is not None]
        try:
            self._apply(answers)
        except DBAPIError:
            log.warning("%d answers failed together; applying them one by one", len(answers))
            for answer in answers:
                self._apply([answer])
        for result in results:
            if result.error is not None:
                self.counts["errors"] += 1
                log.info("query of task %s failed: %s", result.task_id, result.error.message)
                lifecycle.note_poll_failure(self.db, self.settings, result.task_id, result.error)

    def _apply(self, answers: list[Result]) -> None:
        if not answers:
            return
        query = select(Task).where(Task.id.in_([r.task_id for r in answers])).order_by(Task.id)
        # each task once here, so nothing needs flushing before the commit
        with self.db.write() as session, session.no_autoflush:
            tasks = session.scalars(query.with_for_update())
            by_id = {task.id: task for task in tasks}
            if self.db.is_postgres:
                # the counters in the order every single transition takes them (forward):
                # a batch of mixed transitions then never deadlocks with a callback
                session.execute(select(StateCount.state).order_by(*COUNTER_ORDER).with_for_update())
            for result in answers:
                task = by_id.get(result.task_id)
                if task is None or result.update is None:
                    continue
                for name, value in timing.released().items():
                    setattr(task, name, value)
                lifecycle.apply(
                    session, self.settings, task, result.update, Source.POLL, payload=result.body
                )
        self.counts["polled"] += len(answers)

    def _fetch(self, job: Job, batch: bool) -> list[Result]:
        """In a pool thread: ask the upstream about a job. No database here, and no raising."""
        results: list[Result] = []
        try:
            rest = self._fetch_batch(job, results) if batch and not self._held_back() else job
            for task_id, upstream_id in rest:
                if self._held_back():
                    break
                try:
                    answer = self.client.query(upstream_id)
                except UpstreamError as exc:
                    if isinstance(exc, RateLimitError):
                        self._rate_limited(exc)
                    results.append(Result(task_id, error=exc))
                else:
                    results.append(Result(task_id, answer.update, answer.body))
        except Exception:  # a bug must not stop the pass: what was not asked is released
            log.exception("querying tasks %s failed", [task_id for task_id, _ in job])
        return results

    def _rate_limited(self, exc: RateLimitError) -> None:
        pause = timing.RATE_LIMIT.delay(retry_after=exc.retry_after)
        self.manners.pause("query", pause)
        log.warning("upstream says slow down (HTTP %s): no queries for %.1f s", exc.status, pause)

    def _fetch_batch(self, job: Job, results: list[Result]) -> Job:
        """Ask about the whole job at once; return what still needs a single query."""
        try:
            updates = self.client.query_many([upstream_id for _, upstream_id in job])
        except RateLimitError as exc:
            self._rate_limited(exc)
            results += [Result(task_id, error=exc) for task_id, _ in job]
            return []
        except UpstreamError as exc:  # 4xx: no such endpoint here (else passing: single queries)
            if isinstance(exc, APIStatusError) and exc.status < 500:
                self.manners.no_batch()
            return job
        if not updates:  # an answer that is no batch at all
            self.manners.no_batch()
        found = {upd.upstream_id: upd for upd in updates}
        rest: Job = []
        for task_id, upstream_id in job:
            upd = found.get(upstream_id)
            if upd is None:
                rest.append((task_id, upstream_id))
            else:
                shown = {k: v for k, v in asdict(upd).items() if v is not None}
                results.append(Result(task_id, upd, {"batch": shown}))
        return rest

    def next_delay(self) -> float:
        """The interval, or less when a poll falls due sooner (but not before a Retry-After)."""
        due = claims.next_poll_due(self.db, self.settings)
        interval = self.settings.worker_interval
        soon = interval if due is None else (due - utcnow()).total_seconds()
        return min(interval, max(0.01, soon, self.manners.pause_left("query")))

    def close(self) -> None:
        """Let the requests in hand finish, then give back every lease still held."""
        self.stopping.set()
        self.pool.shutdown(wait=True)
        self.release()


def run_once(
    settings: Settings, *, db: Database | None = None, client: LumaClient | None = None
) -> dict[str, int]:
    """One pass (`tracker poll --once`, cron, tests); returns what it did."""
    database = db or Database(settings.database_url)
    upstream = client or make_client(settings)
    webhooks.configure(settings)
    worker = Worker(settings, database, upstream)
    sender = Sender(settings, database, worker.name)
    worker.heartbeat.start()
    try:
        summary = worker.run_once()
        sender.run_once()  # the events this pass made (and any due), sent before returning
        return summary
    finally:
        sender.close()
        worker.close()
        worker.heartbeat.stop()
        if client is None:
            upstream.close()
        if db is None:
            database.dispose()


def _archive_forever(worker: Worker) -> None:
    """Copy finished videos while their links are fresh, beside the passes, until stopped.

    Now and then, remove the partial files of downloads whose process died (each taken-over
    task's go at once, in `media`; this catches the rest, a task archived since, say).
    """
    next_sweep = 0.0
    while not worker.stopping.is_set():
        try:
            if time.monotonic() >= next_sweep:
                media.remove_stale_partials(worker.db, worker.settings)
                next_sweep = time.monotonic() + heartbeat.STALE_AFTER
            archived = media.archive_due(
                worker.db, worker.settings, worker.client, holder=worker.heartbeat
            )
        except Exception:  # the database restarting, say
            log.exception("archiving failed; trying again shortly")
            archived = 0
        if not archived:
            worker.stopping.wait(worker.settings.worker_interval)


def run_forever(settings: Settings) -> int:
    """The Procfile's `poller`: passes until SIGTERM or SIGINT, then a clean exit (0)."""
    redact.register(settings.luma_api_key)
    # a starting process: the metrics files of processes that are gone are removed
    metrics.setup(settings.metrics, settings.metrics_dir, kind="worker", prune=True)
    webhooks.configure(settings)
    database, client = Database(settings.database_url), make_client(settings)
    worker = Worker(settings, database, client)
    sender = Sender(settings, database, worker.name)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: finishing the requests in hand, then stopping", signal.Signals(signum).name)
        worker.stopping.set()
        shutdown.request()  # downloads in progress stop at their next chunk (tracker/shutdown.py)
        sender.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "worker %s: sends queued tasks (%d in flight, %d a minute at most) and queries tasks "
        "quiet for %g s (%d at once) at %s",
        *(worker.name, settings.max_in_flight, settings.submits_per_minute),
        *(settings.poll_after, settings.poll_concurrency, client.base_url),
    )
    warn_about(settings, web=False)
    worker.heartbeat.start()
    archiver = threading.Thread(target=_archive_forever, args=(worker,), name="archive")
    archiver.start()
    deliverer = threading.Thread(target=sender.run_forever, name="deliver")
    deliverer.start()
    while not worker.stopping.is_set():
        delay = settings.worker_interval
        try:
            summary = worker.run_once(archive=False)
            if any(summary.values()):
                log.info("pass: %s", " ".join(f"{k}={v}" for k, v in summary.items() if v))
            delay = worker.next_delay()
        except Exception:  # the database restarting, say: keep trying rather than exit
            log.exception("the pass failed; trying again in %g s", delay)
        worker.stopping.wait(delay)
    archiver.join()
    sender.stopping.set()
    deliverer.join()
    sender.close()
    try:
        worker.close()
    except Exception:
        log.exception("could not release leases; they expire after %g s", settings.lease_seconds)
    worker.heartbeat.stop()
    client.close()
    database.dispose()
    log.info("worker %s stopped", worker.name)
    return 0
