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

from flask import Blueprint, Flask, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import RequestEntityTooLarge

from tracker import metrics as metric
from tracker.flows.services import Services
from tracker.tasks import callbacks as ingest
from tracker.upstream.parse import parse_body
from tracker.web import errors, metrics, sameorigin, security
from tracker.web.context import services

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)
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
    metrics.note_callback(understood)
    return body, status


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastPath:
    """WSGI: a plain callback answered without Flask; every other request passed to `app`."""

    def __init__(self, app: WSGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.limit = services.settings.max_callback_bytes
        self.names = sameorigin.own_names(services.settings)

    def _plain(self, environ: dict[str, Any]) -> str | None:
        """The token of a callback the fast path may answer, or None."""
        if environ.get("REQUEST_METHOD") != "POST" or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if match is None or not length.isdigit() or int(length) > self.limit:
            return None
        if sameorigin.host_name(environ.get("HTTP_HOST", "")) not in self.names:
            return None
        return match["token"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        token = self._plain(environ)
        if token is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        raw = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        headers = [("Content-Type", "application/json"), *security.HEADERS]
        understood = True
        try:
            (status, body), understood = answer(self.services, token, raw)
        except (OperationalError, PoolTimeout) as exc:
            status, body = 503, {"error": errors.DATABASE_DOWN}
            headers.append(("Retry-After", "5"))
            errors.log_database_down(exc)
        except Exception:
            log.exception("unhandled error on POST %s", RULE)
            status, body = 500, {"error": errors.UNEXPECTED}
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"  # as Flask's jsonify
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {_REASONS[status]}", headers)
        metric.http_request("POST", RULE, status, time.perf_counter() - started)
        metric.callback(metrics.callback_result(status, understood))
        return [data]


_REASONS = {200: "OK", 404: "NOT FOUND", 500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE"}


def init_app(app: Flask) -> None:
    """Put the fast path under the WSGI layers added later (request ids, ProxyFix)."""
    services = app.extensions["tracker"]
    # Flask documents this assignment as the way to add WSGI middleware, but types wsgi_app
    # as a method, which mypy will not let be assigned
    app.wsgi_app = FastPath(app.wsgi_app, services)  # type: ignore[method-assign]
    app.register_blueprint(bp)
