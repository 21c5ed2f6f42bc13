"""The simulator's HTTP side: one request matched to its route, checked (key, latency, the
faults a test queued) and answered from the simulator's tasks, in either voice.

`Routes` is the half of `Simulator` (simulator.py) that answers requests, as a base class
so its handlers read the simulator's own attributes; the other half holds the settings,
serves it in a thread and gives tests their controls. `Simulator.__init__` sets every
attribute declared here.

Each request is answered for the account its key names (`record.key`, accounts.py): a task
of another account is looked up as an unknown id (`_owned`), lists and batches hold the
account's own tasks only, and the account's balance pays for its creates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from lumasim import accounts, luma, proxy
from lumasim.accounts import Accounts
from lumasim.callbacks import Callbacks
from lumasim.faults import Faults
from lumasim.media import SampleMedia
from lumasim.tasks import FAIL_WORD, RequestRecord, SimTask

log = logging.getLogger("lumasim.simulator")  # the name its lines have always carried
# every endpoint that makes (or, upscale and audio, remakes) a generation is the "create" route:
# what faults.py queues for "create" and what the request records count as one
CREATES = frozenset(
    {"create", "extend", "upscale", "audio", "modify", "reframe", "image", "reframe_image"}
)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


class Routes:
    """One handler per route (`_on_<endpoint>`), and the raw object every answer is built from."""

    flavor: str
    callbacks: bool
    latency: float
    processing_after: float
    complete_after: float
    link_ttl: float
    batch_shape: str
    public_url: str | None
    url: str | None
    tasks: dict[str, SimTask]
    requests: list[RequestRecord]
    creates: int
    _lock: threading.Lock
    _accounts: Accounts
    _faults: Faults
    _media: SampleMedia
    _callbacks: Callbacks
    _urls: Map

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            endpoint, args = self._urls.bind_to_environ(environ).match()
        except HTTPException as exc:
            return _json({"detail": exc.name}, exc.code or 404)(environ, start_response)
        if endpoint == accounts.CONTROL:  # a test's control, not upstream traffic: no record
            return self._accounts.control(args["key"], args["action"])(environ, start_response)
        route = "create" if endpoint in CREATES else endpoint
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
        key = self._accounts.caller(request.headers.get("Authorization", ""))
        if route != "file" and key is None:  # files are presigned links: no key, as Luma's CDN
            response = _json({"detail": "Invalid API key"}, 401)
        else:
            record.key = key or ""
            response = getattr(self, f"_on_{endpoint}")(request, record, **args)
        return response if fault is None else Faults.answer(fault)

    def _owned(self, task_id: str | None, record: RequestRecord) -> SimTask | None:
        """The task if the caller's account made it: another account's id is an unknown one."""
        task = self.tasks.get(task_id) if task_id else None
        return task if task is not None and task.owner == record.key else None

    def _own_tasks(self, record: RequestRecord) -> list[SimTask]:
        """The caller's account's tasks, oldest first (taken under the lock: creates go on)."""
        with self._lock:
            return [task for task in self.tasks.values() if task.owner == record.key]

    def _on_create(self, request: Request, record: RequestRecord) -> Response:
        if self.flavor == "luma":
            return self._create_luma(request, record)
        return self._create(request, record, None)

    def _create_luma(self, request: Request, record: RequestRecord) -> Response:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return _json({"detail": "Request body must be a JSON object"}, 400)
        source = self._owned(luma.source_of(body), record)
        refusal = luma.refusal(body, source.state if source else None)
        if refusal:
            return _json({"detail": refusal}, 400)
        task = self._new_task(body, luma.prompt_of(body), luma.callback_of(body), source, record)
        self._accounts.charge(record.key, luma.VIDEO_COST_CENTS)
        return _json(self._raw(task, self._base_url(request)), 201)

    def _on_credits(self, request: Request, record: RequestRecord) -> Response:
        return _json({"credit_balance": self._accounts.balances[record.key]})

    def _on_extend(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        source = self._owned(task_id, record)
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
        output: str = "mp4",
    ) -> SimTask:
        """Store an accepted create and schedule its callbacks; `output`: mp4, or an image's."""
        now = time.monotonic()
        processing_after, complete_after = self._durations()
        task = SimTask(
            id=str(uuid.uuid4()),
            request_body=body,
            notify_hook=hook,
            created_at=datetime.now(UTC),
            created_mono=now,
            processing_at=now + processing_after,
            done_at=now + max(complete_after, processing_after),
            fails=bool(FAIL_WORD.search(prompt)),
            source_id=source.id if source else None,
            owner=record.key,
            output=output,
        )
        with self._lock:
            self.tasks[task.id] = task
            self.creates += 1
        self._accounts.count_create(record.key)
        record.task_id = task.id
        log.debug("created task %s%s", task.id, f" (extends {source.id})" if source else "")
        if task.notify_hook:
            self._callbacks.schedule(task)
        return task

    def _durations(self) -> tuple[float, float]:
        """Seconds from create to processing and to done: the same for every task here; a
        busier upstream (the soak's) draws them per task."""
        return self.processing_after, self.complete_after

    def _on_query(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        task = self._owned(task_id, record)
        if task is None:
            missing = "Generation not found" if self.flavor == "luma" else "Task not found"
            return _json({"detail": missing}, 404)
        return _json(self._raw(task, self._base_url(request)))

    def _on_list(self, request: Request, record: RequestRecord) -> Response:
        """Luma's `GET /generations?limit=&offset=`: the account's generations, newest first."""
        try:
            limit = int(request.args.get("limit", "10"))
            offset = int(request.args.get("offset", "0"))
        except ValueError:
            return _json({"detail": "limit and offset must be integers"}, 400)
        if not 1 <= limit <= 100 or offset < 0:
            return _json({"detail": "limit must be 1 to 100, offset at least 0"}, 400)
        newest = list(reversed(self._own_tasks(record)))
        page = newest[offset : offset + limit]
        base = self._base_url(request)
        return _json(
            {
                "generations": [self._raw(task, base) for task in page],
                "count": len(page),
                "has_more": offset + len(page) < len(newest),
                "limit": limit,
                "offset": offset,
            }
        )

    def _on_batch(self, request: Request, record: RequestRecord) -> Response:
        if self.batch_shape == "none":
            return _json({"detail": "Not Found"}, 404)
        body = request.get_json(force=True, silent=True)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _json({"detail": "ids must be a list of task ids"}, 400)
        base = self._base_url(request)
        found = (self._owned(i, record) for i in ids)
        raws = [self._raw(task, base) for task in found if task]  # unknown: left out
        if self.batch_shape == "list":
            return _json(raws)
        return _json(proxy.wrapped(raws))

    def _on_download_url(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        task = self._owned(task_id, record)
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
        done, video = state == "completed", task.output == "mp4"
        link = self._media.link
        video_url = link(base, task.id, "mp4", self.link_ttl, task.revision) if done else None
        image = "jpg" if video else task.output  # a video's thumbnail, or the image itself
        image_url = link(base, task.id, image, self.link_ttl, task.revision) if done else None
        if self.flavor == "luma":
            return luma.generation(
                task_id=task.id,
                state=state,
                created_at=task.created_at,
                request=task.request_body,
                video_url=video_url if video else None,
                image_url=image_url,
                failure_reason=task.failure_reason_at(now),
                generation_type="video" if video else "image",
                model=task.model,
            )
        return proxy.luma_object(
            task_id=task.id,
            state=state,
            created_at=task.created_at,
            request=task.request_body,
            video_url=video_url,
            image_url=image_url,
            failure_reason=task.failure_reason_at(now),
        )
