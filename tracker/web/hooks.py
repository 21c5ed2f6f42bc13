"""The callback route the upstream calls (notify_hook).

It finds the task by the secret token in its own URL, never by an id in the
body; stores what it got as an event; applies it forward only; and answers at
once. Nobody documents what resellers send, so any JSON is taken, and what
cannot be understood is kept and makes the task due for a query.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, request
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from .. import lifecycle
from ..models import Task
from ..parse import parse_body
from . import metrics
from .context import services
from .errors import error

bp = Blueprint("hooks", __name__)


@bp.post("/callbacks/luma/<token>")
def luma_callback(token: str):  # type: ignore[no-untyped-def]
    svc = services()
    token_hash = lifecycle.hash_token(token)
    limit = svc.settings.max_callback_bytes
    # a declared length past the limit is refused before reading (werkzeug); a chunked body
    # is read to one byte past the limit, never whole
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    update, payload = parse_body(raw)  # never raises: see parse_body and jsonsafe
    with svc.db.write() as session:
        task = session.scalar(
            select(Task).where(Task.callback_token_hash == token_hash).with_for_update()
        )
        if task is None or not hmac.compare_digest(task.callback_token_hash or "", token_hash):
            return error(404, "unknown callback")
        lifecycle.apply(session, svc.settings, task, update, "callback", payload=payload)
    metrics.note_callback(update.understood)
    return {"received": True, "understood": update.understood}, 200
