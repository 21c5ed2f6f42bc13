"""What a 2xx answer to a create (or extend) says: accepted, refused, or unknown.

Seen (upstream.md): the raw object, a one-element array of it, the seed's
`{code, data: {task_id, task_status}}`, `{code: "success", data: "<task id>"}`, and
gateways that answer 200 with an error body (`{"code": 500, "message": ...}`,
`{"success": false, "error": ...}`): nothing was created, that is a refusal.
A body that names no task and shows no failure leaves the outcome unknown: the
upstream may have created (and charged for) a task we cannot name, so it must not be
resent on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tracker.upstream.parse import fields
from tracker.upstream.parse.task import NOT_UNDERSTOOD, Update, parse

# `code` values that mean success; any other code, with no task named, is a refusal
_SUCCESS_CODES = frozenset({"success", "ok", "0", "200", "201"})


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
        word = fields.text(code, 32)
        if word is not None and word.lower() not in _SUCCESS_CODES:
            return True
    return bool(fields.failure(body.get("error")) or body.get("detail"))


def parse_create(body: Any) -> CreateAnswer:
    """A create's 2xx body -> CreateAnswer; never raises.

    A body that names a task is accepted even when it also shows an error code: the task
    exists upstream, and following it (polls, callbacks) settles what became of it.
    """
    if isinstance(body, list):
        return parse_create(body[0]) if len(body) == 1 else CreateAnswer(NOT_UNDERSTOOD)
    if not isinstance(body, dict):
        return CreateAnswer(NOT_UNDERSTOOD)
    update = parse(body)
    if update.upstream_id is None:
        # {"code": "success", "data": "<task id>"}: the id as a bare string
        bare = fields.text(body.get("data"), 128)
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
            fields.failure(detail) if isinstance(detail, dict) else fields.text(detail),
            fields.text(body.get("message")),
            fields.failure(body.get("error")),
            fields.text(body.get("msg")),
            fields.text(body.get("data")),  # {"code": 400, "data": "prompt too short"}
        ):
            if candidate:
                return candidate[:500]
        if isinstance(detail, list) and detail:
            return str(detail[0])[:500]
    stripped = " ".join(text.split())
    if stripped.startswith("<"):
        return "the upstream answered with an HTML page instead of JSON"
    return stripped[:200] or "no reason given"
