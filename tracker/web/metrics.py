"""`GET /metrics` (Prometheus's text format) and the request timings behind it.

Every request is timed from the first of the app's `before_request` hooks to the response,
and labelled by its route template (`request.url_rule`), never by its path: the callback
route's path holds the task's secret token. Requests the admission gate turns away (503
before the app runs) are counted by the gate itself (tracker/web/admission.py).
With TRACKER_API_TOKEN set, a scrape needs the Bearer token, like the API.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request
from flask.typing import ResponseReturnValue

from tracker import metrics
from tracker.web.auth import request_has_token
from tracker.web.context import services
from tracker.web.errors import error

bp = Blueprint("metrics", __name__)
CALLBACK_ENDPOINT = "hooks.luma_callback"
UNMATCHED = "<unmatched>"


def note_callback(understood: bool) -> None:
    """The callback route says whether it understood the body (counted after the answer)."""
    g.callback_understood = understood


def callback_result(status: int, understood: bool) -> str:
    """The callback counter's label for an answer (the fast path in web/hooks.py counts too)."""
    if status < 300:
        return "understood" if understood else "not_understood"
    if status == 404:
        return "unknown_token"
    if status == 413:
        return "too_large"
    return "error" if status >= 500 else "refused"


def _start() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("metrics_started")
    if started is not None:
        rule = request.url_rule
        status = response.status_code
        metrics.http_request(
            request.method, rule.rule if rule else UNMATCHED, status, time.perf_counter() - started
        )
        if request.endpoint == CALLBACK_ENDPOINT:
            metrics.callback(callback_result(status, g.get("callback_understood", True)))
    return response


@bp.get("/metrics")
def scrape() -> ResponseReturnValue:
    if not request_has_token(basic=False):
        response, status = error(401, "missing or wrong token (Authorization: Bearer <token>)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tracker"'
        return response, status
    svc = services()
    body, content_type = metrics.render(svc.db, svc.settings.luma_api_flavor)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    """Call first in create_app, so that the timing covers the other hooks too."""
    settings = app.extensions["tracker"].settings
    if not metrics.setup(settings.metrics, settings.metrics_dir, kind="web"):
        return
    app.before_request(_start)
    app.after_request(_observe)
    app.register_blueprint(bp)
