"""Turn any upstream body into a small typed Update, or say it was not understood.

Nothing else in the project looks inside upstream JSON. The shapes (upstream.md):
the raw Luma object; the seed's `{"code", "data": {"task_id", "task_status"}}`
wrapper; the task-platform wrapper `{"task_id", "status", "fail_reason",
"data": {raw}}`; a callback envelope `{"timestamp", "data": {...}}`; and the
batch answers (a bare list, or `{"code": "success", "data": [...]}`).
Parsing never raises: whatever the input, the answer is an Update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import jsonsafe

# upstream state names -> our normalized upstream progress
_STATE_MAP = {
    "pending": "pending",
    "queued": "pending",
    "not_start": "pending",
    "submitted": "pending",
    "processing": "processing",
    "dreaming": "processing",
    "in_progress": "processing",
    "running": "processing",
    "completed": "completed",
    "success": "completed",
    "succeeded": "completed",
    "failed": "failed",
    "failure": "failed",
    "fail": "failed",
    "error": "failed",
}

_MAX_DEPTH = 4


@dataclass(frozen=True)
class Update:
    """What one upstream body says about one task."""

    state: str | None = None  # pending | processing | completed | failed | None (unknown)
    upstream_state: str | None = None  # the upstream's own word, for display
    upstream_id: str | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    failure_reason: str | None = None
    understood: bool = False

    @property
    def needs_query(self) -> bool:
        """Completed without a video URL, or not understood: ask the upstream now."""
        return not self.understood or (self.state == "completed" and not self.video_url)


NOT_UNDERSTOOD = Update()


def _text(value: Any, limit: int = 4000) -> str | None:
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL, and no database takes a lone UTF-16 surrogate
        value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
        return value[:limit] or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _url(value: Any) -> str | None:
    """A media field is a URL string or an object holding one."""
    if isinstance(value, dict):
        for key in ("url", "download_url", "video_url"):
            found = _url(value.get(key))
            if found:
                return found
        return None
    text = _text(value, limit=8000)
    if text and text.lower().startswith(("http://", "https://")):
        return text
    return None


def _failure(value: Any) -> str | None:
    if isinstance(value, dict):
        return (
            _text(value.get("reason")) or _text(value.get("message")) or _text(value.get("detail"))
        )
    return _text(value)


def _merge(outer: Update, inner: Update) -> Update:
    """Fields the inner (more specific) object gives win; the outer fills the gaps."""
    state = inner.state or outer.state
    # a wrapper that says FAILURE over an object still saying processing: the wrapper is newer
    if outer.state in ("failed", "completed") and inner.state in ("pending", "processing"):
        state = outer.state
    return Update(
        state=state,
        upstream_state=inner.upstream_state or outer.upstream_state,
        upstream_id=inner.upstream_id or outer.upstream_id,
        video_url=inner.video_url or outer.video_url,
        thumbnail_url=inner.thumbnail_url or outer.thumbnail_url,
        failure_reason=inner.failure_reason or outer.failure_reason,
        understood=inner.understood or outer.understood,
    )


def parse(body: Any, _depth: int = 0) -> Update:
    """Any JSON value -> Update. A list is taken as a batch of one (see parse_batch)."""
    if _depth > _MAX_DEPTH:
        return NOT_UNDERSTOOD
    if isinstance(body, list):
        entries = parse_batch(body, _depth + 1)
        return entries[0] if len(entries) == 1 else NOT_UNDERSTOOD
    if not isinstance(body, dict):
        return NOT_UNDERSTOOD

    raw_state = None
    for key in ("state", "task_status", "status"):
        candidate = _text(body.get(key), limit=32)
        if candidate and candidate.lower() in _STATE_MAP:
            raw_state = candidate
            break
        if candidate and key != "status" and raw_state is None:
            raw_state = candidate  # an unknown word: keep it for display, state stays None
    state = _STATE_MAP.get(raw_state.lower()) if raw_state else None

    upstream_id = _text(body.get("id"), 128) or _text(body.get("task_id"), 128)
    video_url = _url(body.get("video")) or _url(body.get("video_url"))
    thumbnail_url = _url(body.get("thumbnail")) or _url(body.get("thumbnail_url"))
    failure = _failure(body.get("failure_reason")) or _failure(body.get("fail_reason"))
    if state == "failed" and not failure:
        failure = _failure(body.get("error")) or _failure(body.get("message"))

    here = Update(
        state=state,
        upstream_state=raw_state,
        upstream_id=upstream_id,
        video_url=video_url,
        thumbnail_url=thumbnail_url,
        failure_reason=failure if state == "failed" else None,
        understood=state is not None,
    )
    inner = body.get("data")
    if isinstance(inner, dict):
        return _merge(here, parse(inner, _depth + 1))
    if isinstance(inner, list) and len(inner) == 1:
        return _merge(here, parse(inner[0], _depth + 1))
    return here


def parse_body(raw: bytes) -> tuple[Update, Any]:
    """A callback's raw body -> (what it says, what to store as its payload).

    Whatever the body, both come back: JSON nested too deeply or holding NaN/Infinity is
    not understood (the task is queried instead) and kept as text or with nulls.
    """
    read = jsonsafe.read_lenient(raw) if raw else jsonsafe.Lenient(None, jsonsafe.NOT_JSON)
    if read.value is None:
        return NOT_UNDERSTOOD, raw.decode("utf-8", "replace") or None
    return (NOT_UNDERSTOOD if read.problem else parse(read.value)), read.value


def parse_batch(body: Any, _depth: int = 0) -> list[Update]:
    """A batch answer -> one Update per entry that names a task; [] if not a batch."""
    if _depth > _MAX_DEPTH:
        return []
    if isinstance(body, dict):
        body = body.get("data")
    if not isinstance(body, list):
        return []
    updates = [parse(entry, _depth + 1) for entry in body[:10_000]]
    return [u for u in updates if u.upstream_id]


def error_reason(body: Any, text: str = "") -> str:
    """The upstream's reason for a refusal: `{"detail": ...}`, a message, or the page's start."""
    if isinstance(body, dict):
        detail = body.get("detail")
        for candidate in (
            _failure(detail) if isinstance(detail, dict) else _text(detail),
            _text(body.get("message")),
            _text(body.get("error")) or _failure(body.get("error")),
            _text(body.get("msg")),
        ):
            if candidate:
                return candidate[:500]
        if isinstance(detail, list) and detail:
            return str(detail[0])[:500]
    stripped = " ".join(text.split())
    if stripped.startswith("<"):
        return "the upstream answered with an HTML page instead of JSON"
    return stripped[:200] or "no reason given"
