"""A local stand-in for the reseller proxy of Luma's video API (shared/docs/upstream.md),
or, with flavor="luma", for Luma's own API (the routes and shapes in lumasim/luma.py).

Why it exists: `make run` without an API key shows a newcomer the whole loop, the tests drive
the real client over real HTTP, and benchmarks measure the tracker against a known upstream.
It keeps the documented habits (raw Luma objects, two batch shapes, presigned links that expire,
callbacks retried 3 times 100 ms apart when not answered 200) and lets a test inject faults,
including the ambiguous one: a 5xx or a dropped connection after the task was created and charged.

A task's state is derived from the clock when asked. One scheduler thread (a heap of due events,
not a thread per task: benchmarks create 10,000) hands callbacks to a small sending pool.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from . import luma, proxy
from .callbacks import Callbacks
from .faults import Faults
from .media import SampleMedia
from .tasks import FAIL_WORD, STATES, RequestRecord, SimTask, peak

log = logging.getLogger(__name__)

FLAVORS = ("proxy", "luma")


class _QuietHandler(WSGIRequestHandler):
    """Access lines at debug level: benchmarks send tens of thousands of requests."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug('"%s" %s', self.requestline, code)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


class Simulator:
    """The simulated upstream: a WSGI app, optionally served in a thread by `start()`."""

    def __init__(
        self,
        *,
        api_key: str = "",
        callbacks: bool = True,
        processing_after: float = 1.0,
        complete_after: float = 3.0,
        latency: float = 0.0,
        link_ttl: float = 3600.0,
        batch_shape: str = "list",
        public_url: str | None = None,
        flavor: str = "proxy",
        credit_balance: int = 100_000,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be proxy or luma, not {flavor!r}")
        self.flavor = flavor
        self.credit_balance = credit_balance  # US cents (luma: GET /credits)
        if batch_shape not in ("list", "wrapped", "none"):
            raise ValueError(f"batch_shape must be list, wrapped or none, not {batch_shape!r}")
        self.api_key, self.callbacks, self.latency = api_key, callbacks, latency
        self.processing_after, self.complete_after = processing_after, complete_after
        self.link_ttl, self.batch_shape = link_ttl, batch_shape
        self.public_url = public_url.rstrip("/") if public_url else None
        self.url: str | None = None
        self.tasks: dict[str, SimTask] = {}
        self.requests: list[RequestRecord] = []
        self.creates = 0
        self._lock = threading.Lock()
        self._faults = Faults()
        self._media = SampleMedia()  # served from /files/ here, never by the tracker
        self._callbacks = Callbacks(
            lambda task, at: self._raw(task, self._base_url(), at),
            lambda: self.callbacks,
            self.tasks.get,
        )
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        file = Rule("/files/<name>", methods=["GET"], endpoint="file")  # the sample media
        self._urls = Map([*(luma.rules() if flavor == "luma" else proxy.rules()), file])

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

    # -- the HTTP side ----------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            endpoint, args = self._urls.bind_to_environ(environ).match()
        except HTTPException as exc:
            return _json({"detail": exc.name}, exc.code or 404)(environ, start_response)
        route = "create" if endpoint == "extend" else endpoint
        task_id = args.get("task_id") or args.get("name", "").partition(".")[0] or None
        record = RequestRecord(request.method, request.path, route, task_id, time.monotonic())
        with self._lock:
            self.requests.append(record)
        try:
            response = self._respond(endpoint, route, args, request, record)
        except Exception:
            log.exception("simulator error on %s %s", request.method, route)
            response = _json({"detail": "Internal simulator error"}, 500)
        if response is None:  # a dropped connection: the client sees it close without an answer
            record.status, record.ended = 0, time.monotonic()
            with contextlib.suppress(OSError, AttributeError):
                environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            start_response("500 Dropped", [("Content-Length", "0")])
            return [b""]
        record.status, record.ended = response.status_code, time.monotonic()
        return response(environ, start_response)

    def _respond(
        self,
        endpoint: str,
        route: str,
        args: Mapping[str, Any],
        request: Request,
        record: RequestRecord,
    ) -> Response | None:
        if route != "file" and self.latency > 0:
            time.sleep(self.latency)
        fault = self._faults.take(route)
        if fault is not None and not fault.after:
            return Faults.answer(fault)
        if route != "file" and self.api_key and not self._authorized(request):
            response = _json({"detail": "Invalid API key"}, 401)
        else:
            response = getattr(self, f"_on_{endpoint}")(request, record, **args)
        return response if fault is None else Faults.answer(fault)

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())

    def _on_create(self, request: Request, record: RequestRecord) -> Response:
        if self.flavor == "luma":
            return self._create_luma(request, record)
        return self._create(request, record, None)

    def _create_luma(self, request: Request, record: RequestRecord) -> Response:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return _json({"detail": "Request body must be a JSON object"}, 400)
        source_id = luma.source_of(body)
        source = self.tasks.get(source_id) if source_id else None
        refusal = luma.refusal(body, source.state if source else None)
        if refusal:
            return _json({"detail": refusal}, 400)
        task = self._new_task(body, luma.prompt_of(body), luma.callback_of(body), source, record)
        with self._lock:
            self.credit_balance -= luma.VIDEO_COST_CENTS
        return _json(self._raw(task, self._base_url(request)), 201)

    def _on_credits(self, request: Request, record: RequestRecord) -> Response:
        return _json({"credit_balance": self.credit_balance})

    def _on_extend(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        source = self.tasks.get(task_id)
        if source is None:
            return _json({"detail": "Task not found"}, 404)
        return self._create(request, record, source)

    def _create(self, request: Request, record: RequestRecord, source: SimTask | None) -> Response:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return _json({"detail": "Request body must be a JSON object"}, 400)
        refusal = proxy.refusal(body, source.state if source else None, source is not None)
        if refusal:
            return _json({"detail": refusal}, 400)
        hook = body.get("notify_hook")
        hook = hook if isinstance(hook, str) and hook.startswith("http") else None
        task = self._new_task(body, body["user_prompt"], hook, source, record)
        return _json(self._raw(task, self._base_url(request)), 201)

    def _new_task(
        self,
        body: dict[str, Any],
        prompt: str,
        hook: str | None,
        source: SimTask | None,
        record: RequestRecord,
    ) -> SimTask:
        """Store an accepted create and schedule its callbacks."""
        now = time.monotonic()
        task = SimTask(
            id=str(uuid.uuid4()),
            request_body=body,
            notify_hook=hook,
            created_at=datetime.now(UTC),
            created_mono=now,
            processing_at=now + self.processing_after,
            done_at=now + max(self.complete_after, self.processing_after),
            fails=bool(FAIL_WORD.search(prompt)),
            source_id=source.id if source else None,
        )
        with self._lock:
            self.tasks[task.id] = task
            self.creates += 1
        record.task_id = task.id
        log.debug("created task %s%s", task.id, f" (extends {source.id})" if source else "")
        if task.notify_hook:
            self._callbacks.schedule(task)
        return task

    def _on_query(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None:
            missing = "Generation not found" if self.flavor == "luma" else "Task not found"
            return _json({"detail": missing}, 404)
        return _json(self._raw(task, self._base_url(request)))

    def _on_batch(self, request: Request, record: RequestRecord) -> Response:
        if self.batch_shape == "none":
            return _json({"detail": "Not Found"}, 404)
        body = request.get_json(force=True, silent=True)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _json({"detail": "ids must be a list of task ids"}, 400)
        base = self._base_url(request)
        raws = [self._raw(self.tasks[i], base) for i in ids if i in self.tasks]  # unknown: left out
        if self.batch_shape == "list":
            return _json(raws)
        return _json(proxy.wrapped(raws))

    def _on_download_url(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None:
            return _json({"detail": "Task not found"}, 404)
        if task.state != "completed":
            return _json({"detail": "Video is not ready"}, 404)
        base = self._base_url(request)
        return _json({"url": self._media.link(base, task.id, "mp4", self.link_ttl)})

    def _on_file(self, request: Request, record: RequestRecord, name: str) -> Response:
        return self._media.serve(request, name, self.tasks)

    # -- the raw object and its links -------------------------------------------------------

    def _base_url(self, request: Request | None = None) -> str:
        if self.public_url:
            return self.public_url
        if request is not None:
            return request.host_url.rstrip("/")
        return self.url or "http://127.0.0.1"

    def _raw(self, task: SimTask, base: str, now: float | None = None) -> dict[str, Any]:
        """The raw Luma object, as upstream.md shows it, for the task's state at `now`.

        With the luma flavor, Luma's own Generation object instead.
        """
        now = time.monotonic() if now is None else now
        state = task.state_at(now)
        done = state == "completed"
        render = luma.generation if self.flavor == "luma" else proxy.luma_object
        return render(
            task_id=task.id,
            state=state,
            created_at=task.created_at,
            request=task.request_body,
            video_url=self._media.link(base, task.id, "mp4", self.link_ttl) if done else None,
            image_url=self._media.link(base, task.id, "jpg", self.link_ttl) if done else None,
            failure_reason=task.failure_reason_at(now),
        )
