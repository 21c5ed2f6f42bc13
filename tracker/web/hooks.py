"""The callback route the upstream calls (notify_hook).

It finds the task by the secret token in its own URL, never by an id in the
body; stores what it got as an event; applies it forward only; and answers at
once. Nobody documents what resellers send, so any JSON is taken, and what
cannot be understood is kept and makes the task due for a query.

The hot path of the service (docs/benchmarks.md, "Callback ingest"): the body is read
once, parsed once, and written with `lifecycle.ingest` (SQLAlchemy Core: one SELECT, one
UPDATE of the task, one INSERT ... ON CONFLICT DO NOTHING of its event).
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from .. import lifecycle
from ..parse import parse_body
from . import metrics
from .context import services
from .errors import error

bp = Blueprint("hooks", __name__)


@bp.post("/callbacks/luma/<token>")
def luma_callback(token: str) -> ResponseReturnValue:
    svc = services()
    limit = svc.settings.max_callback_bytes
    # a declared length past the limit is refused before reading (werkzeug); a chunked body
    # is read to one byte past the limit, never whole
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    update, payload = parse_body(raw)  # never raises: see parse_body and jsonsafe
    with svc.db.write_connection() as conn:
        found = lifecycle.ingest(conn, svc.settings, lifecycle.hash_token(token), update, payload)
    if found is None:
        return error(404, "unknown callback")
    metrics.note_callback(update.understood)
    return {"received": True, "understood": update.understood}, 200
