"""The dashboard: server-rendered pages to watch, search, submit and act on tasks.

Reads go through `listing`; every change goes through `lifecycle`, as for the API.
Pages refresh themselves (static/dashboard.js asks for the same URL with `X-Live: 1`
and gets just the part that changes). Every POST carries a CSRF token (see `csrf`).
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from .. import credits, importing, jsonsafe, lifecycle, services, validate
from ..models import FINAL_STATES, STATES, Delivery, Task
from ..serialize import short_image, task_json
from ..upstream import UpstreamError
from ..webhooks import queue
from . import csrf, deliveries, forms, links, listing, throttle
from .auth import request_has_token

log = logging.getLogger(__name__)

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",  # the app itself claims /static (Flask registers it always)
)
LIVE_HEADER = "X-Live"
PUBLIC_ENDPOINTS = ("dashboard.static", "dashboard.login")


@bp.record_once
def _setup(state: Any) -> None:
    app = state.app
    csrf.init_app(app, app.extensions["tracker"].settings)
    app.jinja_env.filters.update(
        ago=ago,
        when=when,
        wait=wait,
        safe_url=safe_url,
        web_link=links.web_link,
        pretty=pretty,
        short=short,
        image=short_image,
        dollars=dollars,
    )
    app.jinja_env.globals.update(STATES=STATES, FINAL_STATES=FINAL_STATES)


# -- template helpers -----------------------------------------------------------------------


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = int(((now or lifecycle.utcnow()) - value).total_seconds())
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def dollars(cents: int | None) -> str:
    """A balance in US cents, as a person reads it."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def wait(seconds: int | None) -> str:
    """The upstream's wait estimate as a person reads it: "about 3 min"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"about {seconds} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def safe_url(value: str | None) -> str | None:
    """Only http(s) and this site's own paths go into href/src: never `javascript:`.

    URLs that users or the upstream gave go through `links.web_link` instead (absolute
    http(s) only): a path there could still be read by a browser as another site.
    """
    return links.local_path(value) or links.web_link(value)


def pretty(payload: str | None) -> str:
    """A stored payload, indented; text as it is. Never fails, whatever the row holds."""
    if payload is None:
        return ""
    value = jsonsafe.loads_stored(payload)
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def short(value: str | None, limit: int = 120) -> str:
    if not value:
        return ""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


# -- access ---------------------------------------------------------------------------------


def _is_live() -> bool:
    return request.headers.get(LIVE_HEADER) == "1"


def _allowed() -> bool:
    token = services().settings.api_token
    if not token:
        return True
    return csrf.signed_in(current_app, token) or request_has_token()


@bp.before_request
def _guard():  # type: ignore[no-untyped-def]
    if request.endpoint == "dashboard.static":
        return None
    csrf.protect()
    if request.endpoint in PUBLIC_ENDPOINTS or _allowed():
        return None
    if _is_live() or request.method != "GET":
        return _message(401, "Sign in again", "Your session ended; reload the page to sign in.")
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


@bp.after_request
def _no_store(response: Response) -> Response:
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
        response.vary.add(LIVE_HEADER)
    return response


def _safe_next(target: str | None) -> str:
    return links.safe_next(target, url_for("dashboard.index"))


@bp.route("/login", methods=["GET", "POST"])
def login():  # type: ignore[no-untyped-def]
    token = services().settings.api_token
    target = _safe_next(request.values.get("next"))
    if not token or _allowed():
        return redirect(target)
    error = None
    if request.method == "POST":
        throttle.before_attempt()  # 429 once this address guessed wrong too often
        given = request.form.get("token", "")
        if given and hmac.compare_digest(given.encode(), token.encode()):
            csrf.sign_in(current_app, token)
            return redirect(target, code=303)
        throttle.attempt_failed()
        error = "That is not the token. It is the value of TRACKER_API_TOKEN."
    status = 401 if error else 200
    return render_template("login.html", error=error, next=target), status


@bp.post("/logout")
def logout():  # type: ignore[no-untyped-def]
    csrf.sign_out()
    return redirect(url_for("dashboard.login"), code=303)


# -- pages ----------------------------------------------------------------------------------


def _cursor_arg() -> int | None:
    return listing.cursor_from(request.args.get("cursor", ""))


def list_url(state: str | None, query: str, cursor: int | None = None) -> str:
    params = {k: v for k, v in (("state", state), ("q", query), ("cursor", cursor)) if v}
    return url_for("dashboard.index") + ("?" + urlencode(params) if params else "")


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    state = request.args.get("state") or None
    if state not in STATES:
        state = None
    query = request.args.get("q", "").strip()[:200]
    cursor = _cursor_arg()
    svc = services()
    flavor = svc.settings.luma_api_flavor
    with svc.db.read() as session:
        page = listing.page(session, svc.db, state=state, query=query, cursor=cursor)
        elsewhere = listing.other_dialect_waiting(session, flavor)
    # the stored balance (the worker reads it): never the upstream on a page view
    account = credits.read(svc.db, flavor) if svc.client.dialect.credits_path else None
    template = "_list.html" if _is_live() else "list.html"
    return render_template(
        template,
        page=page,
        list_url=list_url,
        self_url=list_url(state, query, cursor),
        flavor=flavor,
        elsewhere=elsewhere,
        account=account,
    )


@bp.get("/tasks/<int:task_id>")
def detail(task_id: int):  # type: ignore[no-untyped-def]
    with services().db.read() as session:
        found = listing.detail(session, task_id)
    if found is None:
        return _message(404, "No such task", f"There is no task {task_id}.")
    template = "_detail.html" if _is_live() else "detail.html"
    sent = deliveries.delivery_rows(services().db, task_id) or []
    return render_template(
        template, d=found, task=found.task, data=task_json(found.task), deliveries=sent
    )


def _form(values: dict[str, str], errors: dict[str, str]) -> str:
    return render_template(
        "new.html",
        values=values,
        errors=errors,
        aspect_ratios=[(r, r) for r in validate.ASPECT_RATIOS],
        resolutions=[(r, r) for r in validate.RESOLUTIONS],
        flavor=services().settings.luma_api_flavor,
    )


@bp.route("/tasks/new", methods=["GET", "POST"])
def new_task():  # type: ignore[no-untyped-def]
    if request.method == "GET":
        values = {"source_task_id": request.args.get("source", "").strip()[:128]}
        return _form(values, {})
    settings = services().settings
    values, errors, new = forms.read_new_task(
        request.form,
        request.files,
        settings.luma_api_flavor,
        allow_private=settings.notify_allow_private,
    )
    if new is None:
        return _form(values, errors), 400
    svc = services()
    task = lifecycle.submit(svc.db, svc.settings, svc.client, new)
    flash(f"Task {task.id} submitted.", "ok")
    return redirect(url_for("dashboard.detail", task_id=task.id), code=303)


@bp.post("/tasks/import")
def import_task():  # type: ignore[no-untyped-def]
    """The list page's import field: track a task made elsewhere by its upstream id."""
    raw = request.form.get("upstream_id", "")
    try:
        upstream_id = validate.check_upstream_id(raw)
    except validate.ValidationError as exc:
        flash(f"Nothing imported: {exc.message}.", "error")
        return redirect(url_for("dashboard.index"), code=303)
    svc = services()
    try:
        task, created = importing.import_task(svc.db, svc.settings, svc.client, upstream_id)
    except importing.UnknownUpstreamTask as exc:
        flash(
            f"Nothing imported: the upstream does not know {upstream_id} ({exc.reason}).", "error"
        )
        return redirect(url_for("dashboard.index"), code=303)
    except importing.ImportFailed as exc:
        flash(f"Nothing imported: {exc.message}. Try again later.", "error")
        return redirect(url_for("dashboard.index"), code=303)
    flash(
        f"Imported as task {task.id}." if created else f"Already tracked as task {task.id}.", "ok"
    )
    return redirect(url_for("dashboard.detail", task_id=task.id), code=303)


@bp.post("/tasks/<int:task_id>/poll")
def poll(task_id: int):  # type: ignore[no-untyped-def]
    svc = services()
    try:
        lifecycle.poll_one(svc.db, svc.settings, svc.client, task_id)
        flash("Asked the upstream; the answer is in the timeline.", "ok")
    except LookupError:
        return _message(404, "No such task", f"There is no task {task_id}.")
    except lifecycle.InvalidAction as exc:
        flash(str(exc), "error")
    except UpstreamError as exc:
        flash(f"The upstream query failed: {exc.message}", "error")
    return redirect(url_for("dashboard.detail", task_id=task_id), code=303)


@bp.post("/tasks/<int:task_id>/deliveries/<int:delivery_id>/redeliver")
def redeliver(task_id: int, delivery_id: int):  # type: ignore[no-untyped-def]
    """The detail page's Redeliver: the same webhook-id, sent again by the worker."""
    db = services().db
    with db.read() as session:
        row = session.get(Delivery, delivery_id)
        found = row is not None and row.task_id == task_id
    if not found or not queue.redeliver(db, delivery_id):
        return _message(404, "No such delivery", f"Task {task_id} has no delivery {delivery_id}.")
    flash("Queued again; the worker sends it with the same webhook-id.", "ok")
    return redirect(url_for("dashboard.detail", task_id=task_id), code=303)


@bp.post("/tasks/<int:task_id>/resend")
def resend(task_id: int):  # type: ignore[no-untyped-def]
    svc = services()
    try:
        lifecycle.resend(svc.db, svc.settings, svc.client, task_id)
    except LookupError:
        return _message(404, "No such task", f"There is no task {task_id}.")
    except lifecycle.InvalidAction as exc:
        flash(str(exc), "error")
    else:
        with svc.db.read() as session:
            task = session.get(Task, task_id)
        if task is not None and task.state == "queued":
            flash("Queued again; the worker sends it when the upstream takes it.", "ok")
        elif task is not None and task.state == "rejected":
            flash(f"Sent again, and refused again: {task.failure_reason}", "error")
        else:
            flash("Sent again.", "ok")
    return redirect(url_for("dashboard.detail", task_id=task_id), code=303)


# -- errors ---------------------------------------------------------------------------------


def _message(status: int, title: str, text: str) -> Response:
    """An error page; for the live refresh, just the line (the script shows it)."""
    if _is_live():
        return make_response(text, status, {"Content-Type": "text/plain; charset=utf-8"})
    page = render_template("message.html", status=status, title=title, text=text)
    return make_response(page, status)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
    status = exc.code or 500
    if status == 400 and exc.description == "csrf":
        return _message(
            400,
            "The form has expired",
            "Nothing was changed. Go back, reload the page and try again.",
        )
    titles = {404: "Not found", 405: "Not allowed", 413: "Too large"}
    response = _message(status, titles.get(status, exc.name), exc.description or exc.name)
    for name, value in exc.get_headers():  # Retry-After on 429, Allow on 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


@bp.errorhandler(OperationalError)
def _database_down(exc: OperationalError):  # type: ignore[no-untyped-def]
    log.error("database unavailable: %s", type(exc.orig).__name__ if exc.orig else exc)
    response = _message(503, "The database is unavailable", "Try again in a few seconds.")
    response.headers["Retry-After"] = "5"
    return response


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):  # type: ignore[no-untyped-def]
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _message(500, "Something went wrong", "The error has been logged.")
