"""What one upstream body says about one task: the Update, from any documented shape.

The families (upstream.md): the raw reseller object (`state`, `video`, `thumbnail`);
Luma's own Generation object (`state` queued/dreaming/completed/failed, `assets.video`,
`assets.image`, `model` or the older `version`); reseller task shapes (`status` in any
spelling, `output.video_url`/`url`/`video`, `output.cover_url`, `progress` as 45 or
"45%", a reason in `error`/`fail_reason`/`message`); and every wrapper around them under
`data` (the seed's `{code, data: {task_id, task_status}}`, the task platform's
`{task_id, status, fail_reason, data}`, a callback's `{timestamp, data}`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tracker.tasks.states import NOT_UNDERSTOOD, Update
from tracker.upstream.parse import fields

_MAX_DEPTH = 4
_FINAL = ("completed", "failed")


def _read(body: dict[str, Any]) -> Update:
    """This object's own fields, without looking into `data`.

    `failure_reason` holds any explicit reason found; `parse` drops it unless the task failed.
    """
    word = state = None
    for key in ("state", "task_status", "status"):
        candidate, known = fields.state_word(body.get(key))
        if known:
            word, state = candidate, known
            break
        if candidate and key != "status" and word is None:
            word = candidate  # an unknown word: kept for display, the state stays None
    output, assets = body.get("output"), body.get("assets")
    request = body.get("request")
    reason = (
        fields.failure(body.get("failure_reason"))
        or fields.failure(body.get("fail_reason"))
        or fields.failure(body.get("error"))
        or (fields.failure(output.get("error")) if isinstance(output, dict) else None)
    )
    if state == "failed" and not reason:
        reason = fields.failure(body.get("message"))
    return Update(
        state=state,
        upstream_state=word,
        upstream_id=fields.text(body.get("id"), 128) or fields.text(body.get("task_id"), 128),
        video_url=fields.first_url(body, "video", "video_url")
        or fields.first_url(assets, "video")
        or fields.first_url(output, "video_url", "url", "video"),
        thumbnail_url=fields.first_url(body, "thumbnail", "thumbnail_url", "cover_url")
        or fields.first_url(assets, "image")
        or fields.first_url(output, "cover_url", "thumbnail_url", "thumbnail"),
        failure_reason=reason,
        understood=state is not None,
        progress=fields.progress(body.get("progress")),
        estimate_wait_seconds=fields.seconds(body.get("estimate_wait_seconds")),
        model=fields.text(body.get("model"), 64)
        or fields.text(body.get("version"), 64)
        or fields.text(body.get("model_name"), 64),
        prompt=fields.text(body.get("prompt"), 10_000)
        or (fields.text(request.get("prompt"), 10_000) if isinstance(request, dict) else None),
    )


def _merge(outer: Update, inner: Update, outer_names_task: bool) -> Update:
    """Fields the inner (more specific) object gives win; the outer fills the gaps.

    One exception: a wrapper that names the task itself (the task platform's `task_id` +
    `status`) and says it is final, over an object still saying processing: the wrapper is
    newer. A wrapper that names no task (`{"status": "success", "data": {...}}`) is an
    envelope, and its status is about the request, not the task.
    """
    take_outer = not inner.state or (
        outer_names_task and outer.state in _FINAL and inner.state not in _FINAL
    )
    chosen = outer if take_outer else inner

    def pick(name: str) -> Any:
        return getattr(inner, name) if getattr(inner, name) is not None else getattr(outer, name)

    return Update(
        state=chosen.state,
        upstream_state=chosen.upstream_state or pick("upstream_state"),
        upstream_id=pick("upstream_id"),
        video_url=pick("video_url"),
        thumbnail_url=pick("thumbnail_url"),
        failure_reason=chosen.failure_reason or pick("failure_reason"),
        understood=chosen.state is not None,
        progress=pick("progress"),
        estimate_wait_seconds=pick("estimate_wait_seconds"),
        model=pick("model"),
        prompt=pick("prompt"),
    )


def _parse(body: Any, depth: int) -> Update:
    if depth > _MAX_DEPTH:
        return NOT_UNDERSTOOD
    if isinstance(body, list):
        entries = _batch(body, depth + 1)
        return entries[0] if len(entries) == 1 else NOT_UNDERSTOOD
    if not isinstance(body, dict):
        return NOT_UNDERSTOOD
    here = _read(body)
    inner = body.get("data")
    if isinstance(inner, list) and len(inner) == 1:
        inner = inner[0]
    if isinstance(inner, dict):
        return _merge(here, _parse(inner, depth + 1), outer_names_task=here.upstream_id is not None)
    return here


def _final(update: Update) -> Update:
    if update.state != "failed" and update.failure_reason is not None:
        return replace(update, failure_reason=None)
    return update


def parse(body: Any) -> Update:
    """Any JSON value -> Update; never raises. A list is taken as a batch of one."""
    return _final(_parse(body, 0))


def _batch(body: Any, depth: int) -> list[Update]:
    if depth > _MAX_DEPTH:
        return []
    if isinstance(body, dict):
        # the task platform's {"code", "data": [...]}; Luma's list answer {"generations": [...]}
        body = body.get("data") if "data" in body else body.get("generations")
    if not isinstance(body, list):
        return []
    updates = [_final(_parse(entry, depth + 1)) for entry in body[:10_000]]
    return [u for u in updates if u.upstream_id]


def parse_batch(body: Any) -> list[Update]:
    """A batch answer -> one Update per entry that names a task; [] if not a batch."""
    return _batch(body, 0)
