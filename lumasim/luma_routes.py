"""Luma's operations beside create, get, list and credits: upscale and audio (which rerun a
generation under its own id), modify and reframe (a new video from a video), and images
(photon: create and reframe).

Why a subclass of `Routes` rather than more handlers in routes.py: these are the luma voice
only and routes.py is the shared half; the handlers still need the task store, the clock
and the callbacks that `Routes` declares. What each operation takes is `luma_checks.py`'s.
"""

from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Request, Response

from lumasim import luma, luma_checks
from lumasim.routes import Routes, _json
from lumasim.store import TaskStore
from lumasim.tasks import FAIL_WORD, RequestRecord, SimTask


def _body(request: Request) -> dict[str, Any] | None:
    body = request.get_json(force=True, silent=True)
    return body if isinstance(body, dict) else None


class LumaRoutes(Routes):
    """One handler per route of luma.rules() beyond the create; every answer a Generation."""

    _store: TaskStore | None  # set by Simulator.__init__: where tasks are kept, if anywhere

    def _on_upscale(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        return self._rerun("upscale", request, record, task_id)

    def _on_audio(self, request: Request, record: RequestRecord, task_id: str) -> Response:
        return self._rerun("audio", request, record, task_id)

    def _on_modify(self, request: Request, record: RequestRecord) -> Response:
        return self._make("modify", request, record)

    def _on_reframe(self, request: Request, record: RequestRecord) -> Response:
        return self._make("reframe", request, record)

    def _on_image(self, request: Request, record: RequestRecord) -> Response:
        return self._make("image", request, record)

    def _on_reframe_image(self, request: Request, record: RequestRecord) -> Response:
        return self._make("reframe_image", request, record)

    def _make(self, name: str, request: Request, record: RequestRecord) -> Response:
        """A new generation, with a new id, like a create: queued, dreaming, then completed."""
        body = _body(request)
        if body is None:
            return _json({"detail": "Request body must be a JSON object"}, 400)
        refusal = luma_checks.refusal(name, body)
        if refusal:
            return _json({"detail": refusal}, 400)
        output = luma_checks.OPERATIONS[name].result(body)
        task = self._new_task(
            luma_checks.echo(name, body),
            luma.prompt_of(body),
            luma.callback_of(body),
            None,
            record,
            output=output,
        )
        self._charge(output, record.key)
        if body.get("sync"):  # the answer waits for the image, up to sync_timeout
            timeout = body.get("sync_timeout") or luma_checks.SYNC_TIMEOUT
            until = min(task.done_at, time.monotonic() + float(timeout))
            time.sleep(max(0.0, until - time.monotonic()))
        return _json(self._raw(task, self._base_url(request)), 201)

    def _rerun(self, name: str, request: Request, record: RequestRecord, task_id: str) -> Response:
        """Upscale or audio: Luma answers with the source's own id and reruns that generation.

        It goes back through dreaming to completed (the dreaming part of a create's time),
        then shows a new video link (a new revision's name); the callbacks go to this
        request's callback_url, and GET shows this request as the generation's `request`.
        """
        source = self._owned(task_id, record)  # another account's: as an unknown id
        if source is None:
            return _json({"detail": "Generation not found"}, 404)
        body = _body(request)
        if body is None:
            return _json({"detail": "Request body must be a JSON object"}, 400)
        refusal = luma_checks.refusal(name, body) or luma_checks.rerun_refusal(
            name, source.state, source.output
        )
        if refusal:
            return _json({"detail": refusal}, 400)
        now = time.monotonic()
        with self._lock:
            self._restart(source, luma_checks.echo(name, body), luma.callback_of(body), now)
            source.fails = bool(FAIL_WORD.search(luma.prompt_of(body)))
            self.creates += 1
            if self._store is not None:  # the new run, so GET after a restart shows it
                self._store.save(source)
        self._accounts.count_create(record.key)
        self._charge(source.output, record.key)
        if source.notify_hook:
            self._callbacks.schedule(source)
        return _json(self._raw(source, self._base_url(request), now), 201)

    def _restart(self, task: SimTask, echo: dict[str, Any], hook: str | None, now: float) -> None:
        """The task's new run, under the lock; its revision names the new video (media.py)."""
        task.model = task.model or task.request_body.get("model")
        task.request_body, task.notify_hook = echo, hook
        task.forced_state = task.forced_reason = None
        task.created_mono = task.processing_at = now  # counted in flight again from now
        task.done_at = now + max(self.complete_after - self.processing_after, 0.0)
        task.revision += 1

    def _charge(self, output: str, key: str) -> None:
        """The caller's account pays: a video's price, or an image's."""
        cost = luma.VIDEO_COST_CENTS if output == "mp4" else luma.IMAGE_COST_CENTS
        self._accounts.charge(key, cost)
