"""The worker's query pass: due tasks claimed with a lease and asked about, in batches.

Each pass, pending and processing tasks whose check is due (`tasks.claims.claim_queries`)
are queried, at most TRACKER_POLL_CONCURRENCY requests at once, in batches of BATCH_SIZE
where the upstream answers them (a batch endpoint that fails with a 4xx, or answers with no
batch, is left alone for accounts.BATCH_REPROBE seconds). Only the pool's threads talk to the
upstream; the pass's own thread hands every answer and failure to the store
(`store.record_queries`, `store.query_failed`), answers that arrive together at once.
`query_now` is one task's query, asked for by a person (the dashboard, `tracker poll`).

What a process learned about an account's upstream (a Retry-After, no batch endpoint) is
its `Manners` (`upstream.accounts`), shared by every pass and thread, dispatch included.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import claims, schedule, store
from tracker.tasks.claims import Job
from tracker.tasks.heartbeats import Heartbeat
from tracker.tasks.models import Task
from tracker.tasks.states import InvalidAction, Update
from tracker.upstream import accounts
from tracker.upstream.accounts import Account
from tracker.upstream.client import APIStatusError, LumaClient, RateLimitError, UpstreamError

log = logging.getLogger(__name__)

BATCH_SIZE = 50


@dataclass
class Result:
    """What the upstream said about one task: an answer, or the error that took its place."""

    task_id: int
    update: Update | None = None
    body: Any = None
    error: UpstreamError | None = None


class QueryPass:
    """One worker's queries: its claims on due tasks, its pool of HTTP threads, its writes."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        client: LumaClient,
        *,
        owner: str,
        stopping: threading.Event,
        account: Account,
        heartbeat: Heartbeat,
    ) -> None:
        self.settings, self.db, self.client = settings, db, client
        self.name = owner  # on the leases
        self.stopping, self.account, self.heartbeat = stopping, account, heartbeat
        self.manners = accounts.manners_for(account.name)  # what the upstream taught it
        self.pool = ThreadPoolExecutor(settings.poll_concurrency, thread_name_prefix="poll")
        self.counts: dict[str, int] = {}  # the pass's, handed over by `run`

    def run(self, cutoff: datetime, counts: dict[str, int]) -> None:
        """Query what was due when the pass began; keep the pool busy, hoard no claims.

        Pool threads only talk HTTP; this thread does every write, so the process is a single
        writer: its threads never wait on each other in SQLite's busy handler. What it did is
        counted into the pass's `counts` ("polled", "errors").
        """
        self.counts = counts
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
        job = claims.claim_queries(
            self.db, self.settings, self.name, cutoff, limit, account=self.account
        )
        self.heartbeat.claimed(len(job))
        return job

    def release(self, job: Job | None = None) -> None:
        """Give back the leases this worker holds on tasks it will not query (all when None)."""
        claims.release_queries(self.db, self.name, job)

    def _record(self, results: list[Result]) -> None:
        """Answers to the store together (a query's cost to the worker is mostly the
        database's), or one by one if that fails (a deadlock PostgreSQL broke); failures
        back their task off."""
        answers = [(r.task_id, r.update, r.body) for r in results if r.update is not None]
        try:
            store.record_queries(self.db, self.settings, answers)
        except DBAPIError:
            log.warning("%d answers failed together; applying them one by one", len(answers))
            for answer in answers:
                store.record_queries(self.db, self.settings, [answer])
        self.counts["polled"] += len(answers)
        for result in results:
            if result.error is not None:
                self.counts["errors"] += 1
                log.info("query of task %s failed: %s", result.task_id, result.error.message)
                failed(self.db, self.settings, result.task_id, result.error)

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
        except Exception as exc:  # a bug must not stop the pass, nor be retried at once
            log.exception("querying tasks %s failed", [task_id for task_id, _ in job])
            done = {result.task_id for result in results}
            unexpected = UpstreamError(f"unexpected error ({type(exc).__name__})")
            results += [
                Result(task_id, error=unexpected) for task_id, _ in job if task_id not in done
            ]
        return results

    def _rate_limited(self, exc: RateLimitError) -> None:
        pause = schedule.RATE_LIMIT.delay(retry_after=exc.retry_after)
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

    def close(self) -> None:
        """Let the requests in hand finish, then give back every lease still held."""
        self.pool.shutdown(wait=True)
        self.release()


def failed(db: Database, settings: Settings, task_id: int, exc: UpstreamError) -> None:
    retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
    store.query_failed(db, settings, task_id, exc.message, retry_after)


def query_now(db: Database, settings: Settings, client: LumaClient, task_id: int) -> Task:
    """Query one task now and apply the answer (the dashboard's "Poll now", `tracker poll`)."""
    with db.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(task_id)
        upstream_id, upstream, account = task.upstream_id, task.upstream, task.account
    if not upstream_id:
        raise InvalidAction("this task has no upstream id yet, so there is nothing to query")
    try:  # only the account that made it can answer for it
        client = accounts.client_of(settings, account, client)
    except LookupError as exc:
        raise InvalidAction(f"this task's account is gone from the settings: {exc}") from None
    if upstream != client.dialect.name:
        raise InvalidAction(
            f"this task was sent with the {upstream} API, and LUMA_API_FLAVOR is "
            f"{client.dialect.name}: it can only be queried with LUMA_API_FLAVOR={upstream}"
        )
    try:
        answer = client.query(upstream_id)
    except UpstreamError as exc:
        failed(db, settings, task_id, exc)
        raise
    written = store.record_queries(db, settings, [(task_id, answer.update, answer.body)])
    if not written:  # deleted meanwhile (a test's cleanup, say)
        raise LookupError(task_id)
    return written[0]
