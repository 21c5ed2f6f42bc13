"""The worker: sends queued tasks and queries the ones that went quiet.

Callbacks get lost (a reseller never sends one, a deploy drops one, PUBLIC_BASE_URL is
unset), and the upstream limits how many tasks may run at once. So each pass:

1. a task left in `submitting` by a crash gets "outcome unknown" (never resent on our own);
2. tasks with no final state after TRACKER_TASK_TIMEOUT become `timed_out`;
3. queued tasks are sent oldest first while the claims say a slot is free;
4. due pending/processing tasks are claimed with a lease and queried, at most
   TRACKER_POLL_CONCURRENCY requests at once, in batches where the upstream answers them
   (`flows.follow`);
   only tasks of the configured dialect (LUMA_API_FLAVOR): another API cannot answer
   for the rest, so they keep their state (and are not timed out) until it is back;
5. the credit balance is read, at most once a minute (`accounts.refresh`, Luma only);
6. a few finished videos are archived (`flows.archive`) while their links are fresh.

Every claim, lease and backoff is tasks/' (`tasks.claims`, `tasks.schedule`), every state
change the store's: this module runs the passes, and `flows.follow` talks to the upstream
from a thread pool and hands the answers over. A worker killed mid-pass leaves leases that
expire, or that others take over as soon as its heartbeat (`tasks.heartbeats`, a row in
`workers`) goes stale.

Outgoing webhooks are sent by a thread of their own (`flows.notify`), as archival has
one: a receiver that hangs holds up neither the passes nor the downloads.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tracker import metrics, shutdown
from tracker.db import Database, log_failure
from tracker.flows import archive as media
from tracker.flows import imports, submit
from tracker.flows.follow import QueryPass
from tracker.flows.notify import Sender
from tracker.flows.services import make_client, start, warn_about
from tracker.settings import Settings
from tracker.tasks import claims, heartbeats
from tracker.tasks.models import Task, utcnow
from tracker.tasks.states import TaskState
from tracker.upstream import account_rows, accounts
from tracker.upstream.client import LumaClient

log = logging.getLogger(__name__)

ROOM_CHECK = 0.1  # seconds between two looks for a free slot while work waits
COUNTS = ("dispatched", "polled", "timed_out", "recovered", "reconciled", "archived", "errors")


@dataclass
class Share:
    """One account's share of the worker: its client, its manners, its query pass."""

    account: accounts.Account
    client: LumaClient
    manners: accounts.Manners
    queries: QueryPass


class Worker:
    """One process's worker: its name on leases, each account's share, its stop flag."""

    def __init__(self, settings: Settings, db: Database, client: LumaClient) -> None:
        self.settings, self.db, self.client = settings, db, client
        self.name = heartbeats.new_id()
        self.stopping = threading.Event()
        # registered (started) by run_forever and run_once; named as this worker's leases
        self.heartbeat = heartbeats.Heartbeat(db, self.name, paused=self._paused_for)
        self.shares = [self._share(account) for account in accounts.pool(settings)]
        # one create in flight an account at a time, the accounts side by side
        self.senders = ThreadPoolExecutor(len(self.shares), thread_name_prefix="send")
        self.counts = dict.fromkeys(COUNTS, 0)  # this pass's; only the pass's thread counts

    def _share(self, account: accounts.Account) -> Share:
        client = accounts.client_of(self.settings, account.name, self.client)
        queries = QueryPass(
            self.settings,
            self.db,
            client,
            owner=self.name,
            stopping=self.stopping,
            account=account,
            heartbeat=self.heartbeat,
        )
        return Share(account, client, accounts.manners_for(account.name), queries)

    def run_once(self, *, archive: bool = True) -> dict[str, int]:
        """One pass; the counts say what it did. Upstream trouble never raises from here.

        `archive=False` when a thread of its own archives (run_forever): a large download
        must not hold up the queries of everything else.
        """
        self.counts = dict.fromkeys(COUNTS, 0)
        self.counts["recovered"] = claims.recover_interrupted_submissions(self.db)
        for share in self.shares:
            self.counts["timed_out"] += claims.time_out_overdue(
                self.db, self.settings, account=share.account
            )
        self._dispatch()
        for share in self.shares:
            share.queries.run(utcnow(), self.counts)
        for share in self.shares:
            if self.stopping.is_set():
                break
            self.counts["reconciled"] += imports.reconcile(self.db, self.settings, share.client)
            account_rows.refresh(self.db, share.account, share.client)  # once a minute at most
        if archive and not self.stopping.is_set():
            self.counts["archived"] = media.archive_due(
                self.db, self.settings, self.client, holder=self.heartbeat
            )
        return dict(self.counts)

    def _paused_for(self) -> float:
        """Seconds until the upstream lets this worker query and create again (0: it does)."""
        return min(
            max(share.manners.pause_left("query"), share.manners.pause_left("create"))
            for share in self.shares
        )

    def _dispatch(self) -> None:
        """Rounds of claims, each account with room (least loaded first) taking one, the
        accounts' creates sent at once and awaited before the next round: an account's oldest
        goes first and a "not now" stops its next create (its Retry-After), a claim's lease
        never waits behind other sends, and a pool refills its accounts side by side."""
        by_name = {share.account.name: share for share in self.shares}
        while not self.stopping.is_set():
            sends = []
            for account in account_rows.by_load(self.db, self.settings):
                share = by_name[account.name]
                if share.manners.pause_left("create"):
                    continue
                claimed = claims.claim_for_dispatch(
                    self.db, self.settings, limit=1, account=account, owner=self.name
                )
                self.heartbeat.claimed(len(claimed))
                client = share.client
                sends += [
                    (share, self.senders.submit(submit.send, self.db, self.settings, client, *one))
                    for one in claimed
                ]
            if not sends:
                return  # no account took anything: the queue waits for room
            for share, sent in sends:
                self._sent(share, sent.result())

    def _sent(self, share: Share, task: Task) -> None:
        if task.state == TaskState.QUEUED and task.next_check_at:  # 429 or refused: "not now"
            # no other create before this one's turn: Retry-After kept, oldest still first
            wait_s = (task.next_check_at - utcnow()).total_seconds()
            share.manners.pause("create", wait_s)
            if wait_s > 0:  # every process: the account's row
                account_rows.pause(self.db, share.account, wait_s)
        failed = task.state in (TaskState.QUEUED, TaskState.REJECTED)
        self.counts["errors" if failed else "dispatched"] += 1

    def wait(self, delay: float) -> None:
        """Until the next pass; sooner for a dispatch when a slot frees while work waits (a
        callback finishing a task lands in the web process, which cannot wake this one): a
        cheap read every ROOM_CHECK seconds, and a claim only when an account has room."""
        end = time.monotonic() + delay
        try:
            if not account_rows.waiting(self.db):  # new work is sent at submit, by the web
                self.stopping.wait(delay)
                return
            while not self.stopping.is_set() and (left := end - time.monotonic()) > 0:
                self.stopping.wait(min(ROOM_CHECK, left))
                if account_rows.by_load(self.db, self.settings):
                    self._dispatch()
        except Exception:  # the database restarting, say: the next pass says so
            self.stopping.wait(max(0.0, end - time.monotonic()))

    def next_delay(self) -> float:
        """The interval, or less when a poll falls due sooner (but not before a Retry-After)."""
        interval = self.settings.worker_interval
        delays = [interval]
        for share in self.shares:
            due = claims.next_query_due(self.db, share.account)
            soon = interval if due is None else (due - utcnow()).total_seconds()
            delays.append(max(0.01, soon, share.manners.pause_left("query")))
        return min(delays)

    def close(self) -> None:
        """Let the requests in hand finish, then give back every lease still held."""
        self.stopping.set()
        self.senders.shutdown(wait=True)
        for share in self.shares:
            share.queries.close()


def run_once(
    settings: Settings, *, db: Database | None = None, client: LumaClient | None = None
) -> dict[str, int]:
    """One pass (`tracker poll --once`, cron, tests); returns what it did."""
    database = db or Database(settings.database_url)
    upstream = client or make_client(settings)
    start(settings)  # the set-up the web app and the CLI share (flows/services.py)
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
                next_sweep = time.monotonic() + heartbeats.STALE_AFTER
            archived = media.archive_due(
                worker.db, worker.settings, worker.client, holder=worker.heartbeat
            )
        except Exception as exc:  # the database restarting, say
            log_failure(log, exc, "archiving failed; trying again shortly")
            archived = 0
        if not archived:
            worker.stopping.wait(worker.settings.worker_interval)


def run_forever(settings: Settings) -> int:
    """The Procfile's `poller`: passes until SIGTERM or SIGINT, then a clean exit (0)."""
    start(settings)  # the set-up the web app and the CLI share (flows/services.py)
    # a starting process: the metrics files of processes that are gone are removed
    names = tuple(account.name for account in accounts.pool(settings))
    metrics.setup(settings.metrics, settings.metrics_dir, kind="worker", prune=True, accounts=names)
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
    for share in worker.shares:
        account = share.account
        log.info(
            "worker %s: account %s sends queued tasks (%d in flight, %d a minute at most) and "
            "queries tasks quiet for %g s (%d at once) at %s",
            *(worker.name, account.name, account.max_in_flight, account.submits_per_minute),
            *(settings.poll_after, settings.poll_concurrency, account.base_url),
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
        except Exception as exc:  # the database restarting, say: keep trying rather than exit
            log_failure(log, exc, "the pass failed; trying again in %g s", delay)
        worker.wait(delay)
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
