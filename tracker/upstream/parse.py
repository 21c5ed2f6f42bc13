"""Any upstream body about a task -> a small typed Update, or "not understood".

Nothing outside tracker/upstream looks inside upstream JSON, and nothing here raises,
whatever the input. `parse` reads one task from any answer (query, callback, create),
`parse_batch` a batch query's answer, `parse_body` a callback's raw bytes. What a create's
answer says beyond that (accepted, refused, unknown) is `creates.parse_create`'s.

The shapes (upstream.md): the raw reseller object (`state`, `video`, `thumbnail`); Luma's
Generation object (`state` queued/dreaming/completed/failed, `assets.video`, `assets.image`,
`model` or the older `version`); reseller task shapes (`status` in any spelling,
`output.video_url`/`url`/`video`, `output.cover_url`, `progress` as 45 or "45%", a reason in
`error`/`fail_reason`/`message`); and every wrapper around them under `data` (the seed's
`{code, data: {task_id, task_status}}`, the task platform's `{task_id, status, fail_reason,
data}`, a callback's `{timestamp, data}`).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from tracker import jsontext
from tracker.tasks.states import NOT_UNDERSTOOD, Update

__all__ = ["NOT_UNDERSTOOD", "Update", "failure", "parse", "parse_batch", "parse_body", "text"]

# upstream state words (lower case, spaces and hyphens as "_") -> our state. Luma's own API
# says queued/dreaming; resellers succeed/success/running/...; the task platform
# NOT_START/SUBMITTED/IN_PROGRESS/SUCCESS/FAILURE (upstream.md).
_WORDS = {
    "pending": "pending queued queueing in_queue waiting not_start submitted",
    "processing": "processing dreaming in_progress running generating",
    "completed": "completed complete succeed succeeded success",
    "failed": "failed failure fail error cancelled canceled",
}
STATE_MAP = {word: state for state, words in _WORDS.items() for word in words.split()}

MAX_WAIT_SECONDS = 86_400  # a day of waiting is more than any upstream promises: noise
_MAX_DEPTH = 4
_FINAL = ("completed", "failed")
_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%?\s*$")


# -- single fields: any JSON value -> a clean Python value or None ----------------------------


def text(value: Any, limit: int = 4000) -> str | None:
    """A clean, non-empty string (numbers become text), or None."""
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL, and no database takes a lone UTF-16 surrogate
        value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
        return value[:limit] or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:  # an integer past a float's range (or str()'s digit limit) is no text of ours
            return str(value)[:limit] if math.isfinite(value) else None
        except (OverflowError, ValueError):
            return None
    return None


def _url(value: Any) -> str | None:
    """A media field is a URL string or an object holding one."""
    if isinstance(value, dict):
        for key in ("url", "download_url", "video_url"):
            found = _url(value.get(key))
            if found:
                return found
        return None
    found = text(value, limit=8000)
    if found and found.lower().startswith(("http://", "https://")):
        return found
    return None


def _first_url(obj: Any, *keys: str) -> str | None:
    """The first of `keys` in the object `obj` that holds a URL."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        found = _url(obj.get(key))
        if found:
            return found
    return None


def _state_word(value: Any) -> tuple[str | None, str | None]:
    """(the upstream's word as given, our state or None when the word is unknown)."""
    word = text(value, limit=32)
    if word is None:
        return None, None
    return word, STATE_MAP.get(re.sub(r"[\s\-]+", "_", word.lower()))


def failure(value: Any) -> str | None:
    """A reason: a string, or an object with reason/message/detail."""
    if isinstance(value, dict):
        return text(value.get("reason")) or text(value.get("message")) or text(value.get("detail"))
    return text(value)


def _progress(value: Any) -> int | None:
    """0-100 from a number or a string such as "45%" or "45"; anything else is None."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    try:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            match = _PERCENT.match(value[:32])
            number = float(match.group(1)) if match else None
    except (OverflowError, ValueError):  # an integer past a float's range
        return None
    if number is None or not math.isfinite(number):
        return None
    return max(0, min(100, round(number)))


def _seconds(value: Any) -> int | None:
    """A non-negative wait in whole seconds (number or numeric string), or None."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    try:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip()[:32])
    except (OverflowError, ValueError):  # not a number, or past a float's range
        return None
    if number is None or not math.isfinite(number) or number < 0 or number > MAX_WAIT_SECONDS:
        return None
    return math.ceil(number)


# -- one task, from any shape -----------------------------------------------------------------


def _read(body: dict[str, Any]) -> Update:
    """This object's own fields, without looking into `data`.

    `failure_reason` holds any explicit reason found; `parse` drops it unless the task failed.
    """
    word = state = None
    for key in ("state", "task_status", "status"):
        candidate, known = _state_word(body.get(key))
        if known:
            word, state = candidate, known
            break
        if candidate and key != "status" and word is None:
            word = candidate  # an unknown word: kept for display, the state stays None
    output, assets = body.get("output"), body.get("assets")
    request = body.get("request")
    reason = (
        failure(body.get("failure_reason"))
        or failure(body.get("fail_reason"))
        or failure(body.get("error"))
        or (failure(output.get("error")) if isinstance(output, dict) else None)
    )
    if state == "failed" and not reason:
        reason = failure(body.get("message"))
    return Update(
        state=state,
        upstream_state=word,
        upstream_id=text(body.get("id"), 128) or text(body.get("task_id"), 128),
        video_url=_first_url(body, "video", "video_url")
        or _first_url(assets, "video")
        or _first_url(output, "video_url", "url", "video"),
        thumbnail_url=_first_url(body, "thumbnail", "thumbnail_url", "cover_url")
        or _first_url(assets, "image")
        or _first_url(output, "cover_url", "thumbnail_url", "thumbnail"),
        failure_reason=reason,
        understood=state is not None,
        progress=_progress(body.get("progress")),
        estimate_wait_seconds=_seconds(body.get("estimate_wait_seconds")),
        model=text(body.get("model"), 64)
        or text(body.get("version"), 64)
        or text(body.get("model_name"), 64),
        prompt=text(body.get("prompt"), 10_000)
        or (text(request.get("prompt"), 10_000) if isinstance(request, dict) else None),
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


def parse_list(body: Any) -> tuple[list[dict[str, Any]], bool]:
    """A page of Luma's `GET /generations` -> (the generations on it that name an id, whether
    more follow); ([], False) for anything else."""
    found = body.get("generations") if isinstance(body, dict) else None
    if not isinstance(found, list):
        return [], False
    named = [g for g in found if isinstance(g, dict) and isinstance(g.get("id"), str)]
    return named, body.get("has_more") is True


def parse_body(raw: bytes) -> tuple[Update, Any]:
    """A callback's raw body -> (what it says, what to store as its payload).

    Whatever the body, both come back: JSON nested too deeply or holding NaN/Infinity is
    not understood (the task is queried instead) and kept as text or with nulls.
    """
    read = jsontext.read_lenient(raw) if raw else jsontext.Lenient(None, jsontext.NOT_JSON)
    if read.value is None:
        return NOT_UNDERSTOOD, raw.decode("utf-8", "replace") or None
    return (NOT_UNDERSTOOD if read.problem else parse(read.value)), read.value
