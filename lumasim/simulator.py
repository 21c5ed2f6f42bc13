"""A local stand-in for the reseller proxy of Luma's video API (shared/docs/upstream.md),
or, with flavor="luma", for Luma's own API (the routes and shapes in lumasim/luma.py).

Why it exists: `make run` without an API key shows a newcomer the whole loop, the tests drive
the real client over real HTTP, and benchmarks measure the tracker against a known upstream.
It keeps the documented habits (raw Luma objects, two batch shapes, presigned links that expire,
callbacks retried 3 times 100 ms apart when not answered 200) and lets a test inject faults,
including the ambiguous one: a 5xx or a dropped connection after the task was created and charged.

A task's state is derived from the clock when asked. One scheduler thread (a heap of due events,
not a thread per task: benchmarks create 10,000) hands callbacks to a small sending pool.
Its tasks and the requests it saw are `tasks.py`'s; its routes `routes.py`'s (and, for Luma's
operations beside create, `luma_routes.py`'s); its accounts, one per API key, `accounts.py`'s.
Given a `store` (a SQLite file, `--store PATH`) it keeps its tasks across restarts (`store.py`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from lumasim import accounts, luma, proxy
from lumasim.accounts import Accounts
from lumasim.callbacks import Callbacks
from lumasim.faults import Faults
from lumasim.luma_routes import LumaRoutes
from lumasim.media import SampleMedia
from lumasim.store import Restored, TaskStore
from lumasim.tasks import STATES, RequestRecord, SimTask, peak

log = logging.getLogger(__name__)

FLAVORS = ("proxy", "luma")


class _QuietHandler(WSGIRequestHandler):
    """Access lines at debug level: benchmarks send tens of thousands of requests."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug('"%s" %s', self.requestline, code)


class Simulator(LumaRoutes):
    """The simulated upstream: a WSGI app, optionally served in a thread by `start()`.

    Its settings, serving and test controls are here; how it answers requests (the routes,
    the raw objects) is `Routes`' (routes.py), and `LumaRoutes`' (luma_routes.py) for Luma's
    upscale, audio, modify, reframe and image.

    `api_key` (one key) and `api_keys` (several) are the accounts it serves, each with its
    own generations, balance and creates; with neither it asks for no key, one account.
    `credit_balance` is every account's opening balance (US cents), `balances` a key's own.
    `store`: a SQLite file that keeps its tasks and balances across restarts (a kept balance
    wins over these: the account spent it); None keeps everything in memory only.
    A store that cannot be used raises `StoreError` (store.py), whose text is one line.
    `distinct_media`: every video's bytes its own (media.distinct_video).
    """

    def __init__(
        self,
        *,
        api_key: str = "",
        api_keys: Sequence[str] = (),
        callbacks: bool = True,
        processing_after: float = 1.0,
        complete_after: float = 3.0,
        latency: float = 0.0,
        link_ttl: float = 3600.0,
        batch_shape: str = "list",
        public_url: str | None = None,
        flavor: str = "proxy",
        credit_balance: int = 100_000,
        balances: Mapping[str, int] | None = None,
        store: Path | str | None = None,
        distinct_media: bool = False,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be proxy or luma, not {flavor!r}")
        self.flavor = flavor
        if isinstance(api_keys, str):  # a lone string would be taken as one key per letter
            raise TypeError("api_keys must be a list of keys, not a string")
        self._accounts = Accounts([api_key, *api_keys], credit_balance, balances)
        if batch_shape not in ("list", "wrapped", "none"):
            raise ValueError(f"batch_shape must be list, wrapped or none, not {batch_shape!r}")
        self.api_keys = self._accounts.keys  # empty: no key asked for
        self.api_key, self.callbacks, self.latency = self._accounts.first, callbacks, latency
        self.processing_after, self.complete_after = processing_after, complete_after
        self.link_ttl, self.batch_shape = link_ttl, batch_shape
        self.public_url = public_url.rstrip("/") if public_url else None
        self.url: str | None = None
        self.tasks: dict[str, SimTask] = {}
        self.requests: list[RequestRecord] = []
        self.creates = 0
        self.set_aside = 0  # tasks its store holds for the other flavor: kept, not served
        self._lock = threading.Lock()
        self._faults = Faults()
        self._store = TaskStore(store, flavor, self._accounts.balances) if store else None
        self._restored = self._store.load() if self._store else None
        secret = self._restored.media_secret if self._restored else None
        self._media = SampleMedia(
            secret, distinct=distinct_media
        )  # served from /files/ here, never by the tracker
        self._callbacks = Callbacks(
            lambda task, at: self._raw(task, self._base_url(), at),
            lambda: self.callbacks,
            self.tasks.get,
        )
        if self._store is not None and self._restored is not None:
            self._restore(self._restored)
            self._accounts.saved = self._store.save_balance
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        file = Rule("/files/<name>", methods=["GET"], endpoint="file")  # the sample media
        voice = luma.rules() if flavor == "luma" else proxy.rules()
        self._urls = Map([*voice, file, *accounts.rules()])

    def _restore(self, kept: Restored) -> None:
        """Take back what the store kept: tasks (in their order: lists are newest first)
        and the balances of the keys given this run."""
        for task in kept.tasks:
            self.tasks[task.id] = task
        self._accounts.balances.update(kept.balances)
        self.set_aside = kept.other_dialect

    def _new_task(self, *args: Any, **kwargs: Any) -> SimTask:
        """Routes' create, then the task written to the store (if any) under the lock."""
        task = super()._new_task(*args, **kwargs)
        if self._store is not None:
            with self._lock:  # the task as it is now: a rerun right after writes after this
                self._store.save(task)
        return task

    # -- serving ----------------------------------------------------------------------------

    def wsgi_app(self) -> Callable[..., Iterable[bytes]]:
        """The WSGI app (the simulator object itself is one too)."""
        return self.__call__

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Simulator:
        """Serve in a background thread; threaded, so concurrent requests really overlap."""
        self._server = make_server(host, port, self, threaded=True, request_handler=_QuietHandler)
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{self._server.server_port}"
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="sim-http", daemon=True
        )
        self._thread.start()
        kept, self._restored = self._restored, None
        if kept is not None:  # restored tasks' callbacks, now that their links name this server
            for task in kept.tasks:
                if task.notify_hook:  # those due after the last run stopped: not sent yet
                    self._callbacks.schedule(task, after=kept.seen_at)
        return self

    def stop(self) -> None:
        """Stop serving and sending callbacks; a stopped simulator is not restarted."""
        self._callbacks.halt()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
        self._callbacks.join()
        if self._store is not None:
            self._store.close()

    # -- test controls ----------------------------------------------------------------------

    def fail_next(
        self,
        route: str,
        *,
        status: int = 500,
        body: str | bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
        drop: bool = False,
        after: bool = False,
    ) -> None:
        """The next `times` requests to `route` get this answer; after=True does the work first."""
        self._faults.add(
            route,
            status=status,
            body=body,
            headers=headers,
            times=times,
            delay=delay,
            drop=drop,
            after=after,
        )

    def set_state(self, task_id: str, state: str, *, failure_reason: str | None = None) -> None:
        """Force a task's state from now on (the clock no longer moves it)."""
        state = {"queued": "pending", "dreaming": "processing"}.get(state, state)  # Luma's words
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        task = self.tasks[task_id]
        with self._lock:
            task.forced_state, task.forced_reason = state, failure_reason
            task.forced_at = time.monotonic()
            if self._store is not None:
                self._store.save(task)

    def send_callback(self, task_id: str, body: dict[str, Any] | None = None) -> int:
        """POST one callback now (no retries); the receiver's status, or 0 if it was unreachable."""
        task = self.tasks[task_id]
        if not task.notify_hook:
            raise ValueError(f"task {task_id} has no notify_hook")
        return self._callbacks.post(
            task, body if body is not None else self._raw(task, self._base_url())
        )

    def max_overlap(self, route: str = "query") -> int:
        """Most requests for one task id on `route` in progress at the same time."""
        with self._lock:
            records = [r for r in self.requests if r.route == route and r.task_id]
        by_task: dict[str, list[tuple[float, int]]] = {}
        for r in records:
            end = math.inf if r.ended is None else r.ended
            by_task.setdefault(r.task_id or "", []).extend([(r.started, 1), (end, -1)])
        return max((peak(points) for points in by_task.values()), default=0)

    def max_in_flight(self) -> int:
        """Most tasks created and not yet completed or failed at one moment."""
        with self._lock:
            tasks = list(self.tasks.values())
        points: list[tuple[float, int]] = []
        for task in tasks:
            end = task.finished_at()
            points += [(task.created_mono, 1), (math.inf if end is None else end, -1)]
        return peak(points)

    # -- accounts (accounts.py) --------------------------------------------------------------

    @property
    def credit_balance(self) -> int:
        """The first key's balance (the only one, as most tests have it), in US cents."""
        return self._accounts.balances[self._accounts.first]

    @credit_balance.setter
    def credit_balance(self, cents: int) -> None:
        self._accounts.set_balance(self._accounts.first, cents)

    def balance(self, key: str) -> int:
        """`key`'s balance in US cents: what Luma's GET /credits answers that key."""
        return self._accounts.balances[key]

    def set_balance(self, key: str, cents: int) -> None:
        self._accounts.set_balance(key, cents)

    def revoke(self, key: str) -> None:
        """Every request with `key` is a 401 from now on, as an unknown key's; its tasks go on."""
        self._accounts.revoke(key)

    def restore(self, key: str) -> None:
        """Undo `revoke(key)`: its tasks, balance and counts are as they were."""
        self._accounts.restore(key)

    @property
    def creates_by_key(self) -> dict[str, int]:
        """Creates (reruns included, as in `creates`) per key; "" without keys. A copy."""
        with self._accounts.lock:
            return dict(self._accounts.creates)

    def in_flight(self, key: str | None = None) -> int:
        """How many of `key`'s tasks (every account's: None) are not yet completed or failed."""
        now = time.monotonic()
        with self._lock:
            tasks = [t for t in self.tasks.values() if key is None or t.owner == key]
        ends = (task.finished_at() for task in tasks)
        return sum(1 for end in ends if end is None or end > now)
