"""The callback route the upstream calls (notify_hook).

It finds the task by the secret token in its own URL, never by an id in the body; stores
what it got as an event; applies it forward only; and answers at once. Nobody documents
what resellers send, so any JSON is taken, and what cannot be understood is kept and makes
the task due for a query.

The hot path of the service (docs/benchmarks.md, "Callback ingest"): the body is read once,
parsed once, and written by `tracker/tasks/callbacks.py` (one SELECT, one UPDATE of the task, one
INSERT ... ON CONFLICT DO NOTHING of its event, on the driver's cursor).

Two doors, one answer (`answer`). A plain callback — POST, a token-shaped path, a declared
length within TRACKER_MAX_CALLBACK_BYTES, one of this service's names in Host — is answered
by `FastPath`, a WSGI layer under the request ids and ProxyFix, without Flask: measured, its
request context, session, hooks and response object were a quarter of the route's CPU. It
does what Flask's hooks would have done for this route (the timing and the callback
counter, the two headers every answer carries, the JSON errors). Anything else (a chunked
body, a length past the limit, a strange Host or path) goes to the Flask route below,
untouched, which answers it with the app's own checks.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import RequestEntityTooLarge

from tracker import metrics
from tracker.flows.services import Services
from tracker.tasks import callbacks as ingest
from tracker.upstream.parse import parse_body
from tracker.web import DATABASE_DOWN, UNEXPECTED, log_database_down, services
from tracker.web.security import HEADERS, host_name, own_names

log = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__)
RULE = "/callbacks/luma/<token>"
# what the fast path takes: the tokens this service makes (token_urlsafe) and nothing odd
_PATH = re.compile(r"/callbacks/luma/(?P<token>[A-Za-z0-9_-]{1,256})")

Answer = tuple[int, dict[str, Any]]


def answer(services: Services, token: str, raw: bytes) -> tuple[Answer, bool]:
    """The status and JSON body for a callback's body, and whether the body was understood."""
    update, payload = parse_body(raw)  # never raises: see parse_body and jsonsafe
    found = ingest.callback(services.db, services.settings, token, update, payload)
    if found is None:
        return (404, {"error": "unknown callback"}), update.understood
    return (200, {"received": True, "understood": update.understood}), update.understood


@bp.post(RULE)
def luma_callback(token: str) -> ResponseReturnValue:
    svc = services()
    limit = svc.settings.max_callback_bytes
    # a declared length past the limit is refused before reading (werkzeug); a chunked body
    # is read to one byte past the limit, never whole
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    (status, body), understood = answer(svc, token, raw)
    g.callback_understood = understood  # counted after the answer (monitoring.py)
    return body, status


def callback_result(status: int, understood: bool) -> str:
    """The callback counter's label for an answer (by this route, the fast path, the gate)."""
    if status < 300:
        return "understood" if understood else "not_understood"
    if status == 404:
        return "unknown_token"
    if status == 413:
        return "too_large"
    return "error" if status >= 500 else "refused"


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastPath:
    """WSGI: a plain callback answered without Flask; every other request passed to `app`."""

    def __init__(self, app: WSGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.limit = services.settings.max_callback_bytes
        self.names = own_names(services.settings)

    def _plain(self, environ: dict[str, Any]) -> str | None:
        """The token of a callback the fast path may answer, or None."""
        if environ.get("REQUEST_METHOD") != "POST" or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if match is None or not length.isdigit() or int(length) > self.limit:
            return None
        if host_name(environ.get("HTTP_HOST", "")) not in self.names:
            return None
        return match["token"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        token = self._plain(environ)
        if token is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        raw = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        headers = [("Content-Type", "application/json"), *HEADERS]
        understood = True
        try:
            (status, body), understood = answer(self.services, token, raw)
        except (OperationalError, PoolTimeout) as exc:
            status, body = 503, {"error": DATABASE_DOWN}
            headers.append(("Retry-After", "5"))
            log_database_down(exc)
        except Exception:
            log.exception("unhandled error on POST %s", RULE)
            status, body = 500, {"error": UNEXPECTED}
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"  # as Flask's jsonify
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {_REASONS[status]}", headers)
        metrics.http_request("POST", RULE, status, time.perf_counter() - started)
        metrics.callback(callback_result(status, understood))
        return [data]


_REASONS = {200: "OK", 404: "NOT FOUND", 500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE"}
