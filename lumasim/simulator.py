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

import argparse
import contextlib
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import math
import re
import secrets
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from . import luma

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).parent / "samples"  # served from /files/ here, never by the tracker
SAMPLE_MP4 = SAMPLES / "sample.mp4"
SAMPLE_JPG = SAMPLES / "sample.jpg"
VIDEO_SIZE = (320, 180)  # the sample files' real size
STATES = ("pending", "processing", "completed", "failed")
TERMINAL = frozenset({"completed", "failed"})
ROUTES = ("create", "query", "batch", "download_url", "file", "credits")
FLAVORS = ("proxy", "luma")
FAIL_WORD = re.compile(r"\bfail", re.IGNORECASE)  # "fail", "failing", "failure" ...
FAILURE_REASON = "Frame moderation failed"
# the task-platform words of the "wrapped" batch shape (upstream.md, answer shape 3)
WRAPPED_STATUS = {
    "pending": "SUBMITTED",
    "processing": "IN_PROGRESS",
    "completed": "SUCCESS",
    "failed": "FAILURE",
}
CALLBACK_RETRIES, CALLBACK_RETRY_DELAY, CALLBACK_TIMEOUT, CALLBACK_SENDERS = 3, 0.1, 5.0, 8
_FILE_NAME = re.compile(r"([0-9a-f-]{36})\.(mp4|jpg)")


@dataclass
class RequestRecord:
    """One request as the simulator saw it; `ended` and `status` are set once it is answered."""

    method: str
    path: str
    route: str
    task_id: str | None
    started: float  # time.monotonic()
    ended: float | None = None
    status: int | None = None  # 0: the connection was dropped on purpose


@dataclass
class SimTask:
    """One simulated generation: its state follows the clock unless a test forced one."""

    id: str
    request_body: dict[str, Any]
    notify_hook: str | None
    created_at: datetime  # UTC, what the raw object shows
    created_mono: float
    processing_at: float  # monotonic times
    done_at: float
    fails: bool
    source_id: str | None = None  # the extended task
    forced_state: str | None = None
    forced_reason: str | None = None
    forced_at: float = 0.0

    def state_at(self, now: float) -> str:
        if self.forced_state is not None:
            return self.forced_state
        if now >= self.done_at:
            return "failed" if self.fails else "completed"
        return "processing" if now >= self.processing_at else "pending"

    @property
    def state(self) -> str:
        return self.state_at(time.monotonic())

    def failure_reason_at(self, now: float) -> str | None:
        if self.state_at(now) != "failed":
            return None
        return (self.forced_reason if self.forced_state else None) or FAILURE_REASON

    def finished_at(self) -> float | None:
        """When it stopped counting against the upstream's concurrency; None: it still does."""
        if self.forced_state is None or self.forced_at >= self.done_at:
            return self.done_at
        return self.forced_at if self.forced_state in TERMINAL else None


@dataclass
class _Fault:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]
    times: int
    delay: float
    drop: bool
    after: bool


class _QuietHandler(WSGIRequestHandler):
    """Access lines at debug level: benchmarks send tens of thousands of requests."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug('"%s" %s', self.requestline, code)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


def _peak(points: Iterable[tuple[float, int]]) -> int:
    """Largest running sum of +1/-1 events; at equal times ends sort first (touching != overlap)."""
    current = best = 0
    for _, delta in sorted(points):
        current += delta
        best = max(best, current)
    return best


def _refusal(body: dict[str, Any], source: SimTask | None) -> str | None:
    """Luma's own refusals, in its words (upstream.md, Errors)."""
    prompt = body.get("user_prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "Prompt is required"
    if len(prompt.strip()) < 3:
        return "Prompt is too short, minimum length is 3 characters"
    if len(prompt) > 5000:
        return "Prompt is too long, maximum length is 5000 characters"
    if source is not None and "loop" in body:
        return "Loop is not supported for extend"
    if source is not None and source.state != "completed":
        return f"Only a completed generation can be extended (task is {source.state})"
    return None


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
        self._faults: dict[str, deque[_Fault]] = {route: deque() for route in ROUTES}
        self._secret = secrets.token_bytes(32)
        self._local = threading.local()
        self._events: list[tuple[float, int, str]] = []  # (due, seq, task id)
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._scheduler: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._urls = Map(
            [*luma.rules(), Rule("/files/<name>", methods=["GET"], endpoint="file")]
            if flavor == "luma"
            else [
                Rule("/luma/generations", methods=["POST"], endpoint="create"),
                Rule("/luma/generations/<task_id>/extend", methods=["POST"], endpoint="extend"),
                Rule("/luma/generations/<task_id>", methods=["GET"], endpoint="query"),
                Rule("/luma/tasks", methods=["POST"], endpoint="batch"),
                Rule(
                    "/luma/generations/<task_id>/download_video_url",
                    methods=["GET"],
                    endpoint="download_url",
                ),
                Rule("/files/<name>", methods=["GET"], endpoint="file"),
            ]
        )

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
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

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
        if route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
        if body is None:
            body = {"detail": f"Simulated upstream error (HTTP {status})"}
        if isinstance(body, dict):
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data = body.encode() if isinstance(body, str) else body
            ctype = "text/html" if data.lstrip().startswith(b"<") else "text/plain"
            ctype += "; charset=utf-8"
        fault = _Fault(status, data, ctype, dict(headers or {}), times, delay, drop, after)
        with self._lock:
            self._faults[route].append(fault)

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
        return self._post(task, body if body is not None else self._raw(task, self._base_url()))

    def max_overlap(self, route: str = "query") -> int:
        """Most requests for one task id on `route` in progress at the same time."""
        with self._lock:
            records = [r for r in self.requests if r.route == route and r.task_id]
        by_task: dict[str, list[tuple[float, int]]] = {}
        for r in records:
            end = math.inf if r.ended is None else r.ended
            by_task.setdefault(r.task_id or "", []).extend([(r.started, 1), (end, -1)])
        return max((_peak(points) for points in by_task.values()), default=0)

    def max_in_flight(self) -> int:
        """Most tasks created and not yet completed or failed at one moment."""
        with self._lock:
            tasks = list(self.tasks.values())
        points: list[tuple[float, int]] = []
        for task in tasks:
            end = task.finished_at()
            points += [(task.created_mono, 1), (math.inf if end is None else end, -1)]
        return _peak(points)

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
        args: dict[str, str],
        request: Request,
        record: RequestRecord,
    ) -> Response | None:
        if route != "file" and self.latency > 0:
            time.sleep(self.latency)
        fault = self._take_fault(route)
        if fault is not None and not fault.after:
            return self._fault_answer(fault)
        if route != "file" and self.api_key and not self._authorized(request):
            response = _json({"detail": "Invalid API key"}, 401)
        else:
            response = getattr(self, f"_on_{endpoint}")(request, record, **args)
        return response if fault is None else self._fault_answer(fault)

    def _take_fault(self, route: str) -> _Fault | None:
        with self._lock:
            queue = self._faults[route]
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.popleft()
            return fault

    @staticmethod
    def _fault_answer(fault: _Fault) -> Response | None:
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.drop:
            return None
        response = Response(fault.body, fault.status, content_type=fault.content_type)
        for name, value in fault.headers.items():
            response.headers[name] = value
        return response

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
        refusal = _refusal(body, source)
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
            self._schedule(task)
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
        entries = [
            {
                "task_id": raw["id"],
                "status": WRAPPED_STATUS[raw["state"]],
                "fail_reason": raw["failure_reason"] or "",
                "data": raw,
            }
            for raw in raws
        ]
        return _json({"code": "success", "data": entries})

    def _on_download_url(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        task = self.tasks.get(task_id)
        if task is None:
            return _json({"detail": "Task not found"}, 404)
        if task.state != "completed":
            return _json({"detail": "Video is not ready"}, 404)
        return _json({"url": self._link(self._base_url(request), task.id, "mp4")})

    def _on_file(self, request: Request, record: RequestRecord, name: str) -> Response:
        match = _FILE_NAME.fullmatch(name)
        if match is None or match.group(1) not in self.tasks:
            return _json({"detail": "Not Found"}, 404)
        expires_text = request.args.get("expires", "")
        expires = int(expires_text) if expires_text.isdigit() else -1
        expected = self._sign(name, expires).encode()
        if not hmac.compare_digest(request.args.get("sig", "").encode(), expected):
            return _json({"detail": "Invalid signature"}, 403)
        if expires < time.time():
            return _json({"detail": "Request has expired"}, 403)
        path, mimetype = (
            (SAMPLE_MP4, "video/mp4") if match.group(2) == "mp4" else (SAMPLE_JPG, "image/jpeg")
        )
        return send_file(path, request.environ, mimetype=mimetype, conditional=True, max_age=0)

    # -- the raw object and its links -------------------------------------------------------

    def _base_url(self, request: Request | None = None) -> str:
        if self.public_url:
            return self.public_url
        if request is not None:
            return request.host_url.rstrip("/")
        return self.url or "http://127.0.0.1"

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._secret, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _link(self, base: str, task_id: str, ext: str) -> str:
        """A presigned link, fresh each time it is asked for, valid `link_ttl` seconds."""
        expires, name = int(time.time() + self.link_ttl), f"{task_id}.{ext}"
        return f"{base}/files/{name}?expires={expires}&sig={self._sign(name, expires)}"

    def _raw(self, task: SimTask, base: str, now: float | None = None) -> dict[str, Any]:
        """The raw Luma object, as upstream.md shows it, for the task's state at `now`.

        With the luma flavor, Luma's own Generation object instead.
        """
        now = time.monotonic() if now is None else now
        state = task.state_at(now)
        if self.flavor == "luma":
            done = state == "completed"
            return luma.generation(
                task_id=task.id,
                state=state,
                created_at=task.created_at,
                request=task.request_body,
                video_url=self._link(base, task.id, "mp4") if done else None,
                image_url=self._link(base, task.id, "jpg") if done else None,
                failure_reason=task.failure_reason_at(now),
            )
        video = thumbnail = None
        if state == "completed":
            width, height = VIDEO_SIZE
            url = self._link(base, task.id, "mp4")
            video = {"url": url, "width": width, "height": height, "download_url": url}
            thumbnail = {"url": self._link(base, task.id, "jpg"), "width": width, "height": height}
        return {
            "id": task.id,
            "prompt": task.request_body.get("user_prompt", ""),
            "state": state,
            "queue_state": None,
            "created_at": task.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "batch_id": "",
            "video": video,
            "video_raw": {k: v for k, v in video.items() if k != "download_url"} if video else None,
            "liked": None,
            "estimate_wait_seconds": None,
            "thumbnail": thumbnail,
            "last_frame": dict(thumbnail) if thumbnail else None,
            "failure_reason": task.failure_reason_at(now),
        }

    # -- callbacks ----------------------------------------------------------------------------

    def _schedule(self, task: SimTask) -> None:
        with self._wake:
            if self._stopping:
                return
            if self._scheduler is None:
                self._pool = ThreadPoolExecutor(CALLBACK_SENDERS, thread_name_prefix="sim-callback")
                self._scheduler = threading.Thread(
                    target=self._run_scheduler, name="sim-scheduler", daemon=True
                )
                self._scheduler.start()
            for due in (task.processing_at, task.done_at):
                heapq.heappush(self._events, (due, next(self._seq), task.id))
            self._wake.notify()

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
                due, _, task_id = heapq.heappop(self._events)
            task = self.tasks.get(task_id)
            if not self.callbacks or task is None or self._pool is None:
                continue
            try:
                self._pool.submit(self._deliver, task, due)
            except RuntimeError:  # the pool was shut down: we are stopping
                return

    def _deliver(self, task: SimTask, at: float) -> None:
        """Luma's habit: retry up to 3 times, 100 ms apart, while the answer is not 200."""
        try:
            body = self._raw(task, self._base_url(), at)
            status = 0
            for attempt in range(1 + CALLBACK_RETRIES):
                if attempt:
                    time.sleep(CALLBACK_RETRY_DELAY)
                status = self._post(task, body)
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

    def _post(self, task: SimTask, body: dict[str, Any]) -> int:
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


def main(argv: list[str] | None = None) -> int:
    """Run the simulator in the foreground until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="tracker simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--key", default="", help="require Authorization: Bearer <key>")
    parser.add_argument("--no-callbacks", action="store_true", help="never call notify_hook")
    parser.add_argument("--processing-after", type=float, default=1.0)
    parser.add_argument("--complete-after", type=float, default=3.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--public-url", default=None, help="base of the video links it hands out")
    parser.add_argument("--flavor", choices=FLAVORS, default="proxy", help="the API to speak")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    simulator = Simulator(
        api_key=args.key,
        callbacks=not args.no_callbacks,
        processing_after=args.processing_after,
        complete_after=args.complete_after,
        latency=args.latency,
        public_url=args.public_url,
        flavor=args.flavor,
    )
    try:
        simulator.start(args.host, args.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        return 1
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    log.info(
        "Luma simulator (%s API) listening on %s (bound to %s; callbacks %s)",
        "Luma's own" if args.flavor == "luma" else "the proxy's",
        simulator.url,
        args.host,
        "on" if simulator.callbacks else "off",
    )
    while not stopping.wait(0.5):
        pass
    simulator.stop()
    log.info("Luma simulator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
