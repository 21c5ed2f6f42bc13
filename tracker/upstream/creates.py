"""What the upstream says about a create: the 2xx answer to ours (accepted, refused or
unknown), a refusal's reason, and, for a generation we did not send (an import), the create it
was made from.

Create answers seen (upstream.md): the raw object, a one-element array of it, the seed's
`{code, data: {task_id, task_status}}`, `{code: "success", data: "<task id>"}`, and
gateways that answer 200 with an error body (`{"code": 500, "message": ...}`,
`{"success": false, "error": ...}`): nothing was created, that is a refusal. A body that
names no task and shows no failure leaves the outcome unknown: the upstream may have
created (and charged for) a task we cannot name, so it must not be resent on its own.
None of these raises, whatever the input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tracker.tasks.states import NOT_UNDERSTOOD, Update
from tracker.upstream import parse

# `code` values that mean success; any other code, with no task named, is a refusal
_SUCCESS_CODES = frozenset({"success", "ok", "0", "200", "201"})
MAX_DEPTH = 4
MAX_PROMPT = 5000


@dataclass(frozen=True)
class CreateAnswer:
    """`update` says what the answer tells of the new task; `refused` why nothing was made."""

    update: Update
    refused: str | None = None

    @property
    def accepted(self) -> bool:
        """The answer names the task it created (follow it by that id)."""
        return self.refused is None and self.update.upstream_id is not None

    @property
    def unknown(self) -> bool:
        """Neither a task id nor a failure: the upstream may have made a task we cannot name."""
        return self.refused is None and self.update.upstream_id is None


def _failed_request(body: dict[str, Any]) -> bool:
    """The body says the request itself failed (as opposed to a task that failed)."""
    if body.get("success") is False:
        return True
    code = body.get("code")
    if code is not None and not isinstance(code, bool):
        word = parse.text(code, 32)
        if word is not None and word.lower() not in _SUCCESS_CODES:
            return True
    return bool(parse.failure(body.get("error")) or body.get("detail"))


def parse_create(body: Any) -> CreateAnswer:
    """A create's 2xx body -> CreateAnswer; never raises.

    A body that names a task is accepted even when it also shows an error code: the task
    exists upstream, and following it (queries, callbacks) settles what became of it.
    """
    if isinstance(body, list):
        return parse_create(body[0]) if len(body) == 1 else CreateAnswer(NOT_UNDERSTOOD)
    if not isinstance(body, dict):
        return CreateAnswer(NOT_UNDERSTOOD)
    update = parse.parse(body)
    if update.upstream_id is None:
        # {"code": "success", "data": "<task id>"}: the id as a bare string
        bare = parse.text(body.get("data"), 128)
        if bare is not None and not _failed_request(body):
            update = replace(update, upstream_id=bare)
    if update.upstream_id is None and _failed_request(body):
        return CreateAnswer(update, refused=error_reason(body))
    return CreateAnswer(update)


def error_reason(body: Any, text: str = "") -> str:
    """The upstream's reason for a refusal: `{"detail": ...}`, a message, or the page's start."""
    if isinstance(body, dict):
        detail = body.get("detail")
        for candidate in (
            parse.failure(detail) if isinstance(detail, dict) else parse.text(detail),
            parse.text(body.get("message")),
            parse.failure(body.get("error")),
            parse.text(body.get("msg")),
            parse.text(body.get("data")),  # {"code": 400, "data": "prompt too short"}
        ):
            if candidate:
                return candidate[:500]
        if isinstance(detail, list) and detail:
            return str(detail[0])[:500]
    stripped = " ".join(text.split())
    if stripped.startswith("<"):
        return "the upstream answered with an HTML page instead of JSON"
    return stripped[:200] or "no reason given"


# -- an import's origin -----------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """What an imported task was asked to do: its prompt, and the generation it extends."""

    prompt: str | None = None
    source_id: str | None = None
    image: bool = False  # Luma's `generation_type: "image"`: its result is an image


def _text(value: Any, limit: int) -> str | None:
    return parse.text(value, limit) if isinstance(value, str) else None  # no numbers here


def origin(body: Any, _depth: int = 0) -> Origin:
    """Read from the upstream's answer about a task; never raises.

    `tracker.upstream.parse` says where a task stands; an import also needs what it was made
    from, to show it like any other task. Luma's Generation object keeps it under `request`
    (`request.prompt`, `request.keyframes.frame0 = {"type": "generation", "id"}`; frame1 for
    a reverse extend); the proxy's raw object has a top-level `prompt`; resellers nest either
    under `data`.
    """
    if _depth > MAX_DEPTH:
        return Origin()
    if isinstance(body, list) and len(body) == 1:
        return origin(body[0], _depth + 1)
    if not isinstance(body, dict):
        return Origin()
    request = body.get("request")
    if not isinstance(request, dict):
        request = {}
    prompt = (
        _text(request.get("prompt"), MAX_PROMPT)
        or _text(body.get("prompt"), MAX_PROMPT)
        or _text(body.get("user_prompt"), MAX_PROMPT)
    )
    source = None
    frames = request.get("keyframes")
    if isinstance(frames, dict):
        for name in ("frame0", "frame1"):
            frame = frames.get(name)
            if isinstance(frame, dict) and frame.get("type") == "generation":
                source = _text(frame.get("id"), 128)
                if source:
                    break
    image = "image" in (body.get("generation_type"), request.get("generation_type"))
    here = Origin(prompt, source, image)
    inner = body.get("data")
    if isinstance(inner, dict | list):
        deeper = origin(inner, _depth + 1)
        found = here.source_id or deeper.source_id
        return Origin(here.prompt or deeper.prompt, found, here.image or deeper.image)
    return here
