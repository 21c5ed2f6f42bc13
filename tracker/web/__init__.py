"""The web layer: the app (`app.py`'s create_app), its blueprints, and what they all share.

Shared here, since every part of the layer uses them:

- `services()`: the running app's Services (settings, database, upstream client);
- `MAX_ID`: the largest id a route or a cursor may name;
- every error answered in one place, in the form the asker reads: a page or JSON.

The dashboard's requests get a page (or, for its live refresh, one line of text); API,
callback and other clients get JSON with a clear message. Never a stack trace, never a
secret. Views raise and let these handlers speak: a task that is not there (LookupError,
from the task store) is 404, an action the task's state does not allow (`InvalidAction`) is
409 in JSON and a message back on the task's page on the dashboard.
"""

from __future__ import annotations

import logging

from flask import (
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from tracker.flows.services import Services
from tracker.tasks import store

log = logging.getLogger(__name__)

MAX_ID = 2**31 - 1  # tasks.id is a 32-bit integer on PostgreSQL

PAGES = frozenset({"dashboard"})  # the blueprints whose answers are pages
LIVE_HEADER = "X-Live"  # static/dashboard.js asks for a page's changing part with it
_PAGE_TITLES = {404: "Not found", 405: "Not allowed", 413: "Too large"}
_JSON_MESSAGES = {413: "the request body is too large", 404: "not found", 405: "method not allowed"}
DATABASE_DOWN = "the database is unavailable; try again shortly"
UNEXPECTED = "internal error; it has been logged"

# werkzeug's Response: what `redirect` and `send_file` build (Flask's Response is one too)
Reply = BaseResponse | tuple[BaseResponse, int]


def services() -> Services:
    """The running app's Services, as a request handler reaches them."""
    services: Services = current_app.extensions["tracker"]
    return services


# -- the error answers ----------------------------------------------------------------------


def error(status: int, message: str, field: str | None = None) -> tuple[Response, int]:
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


def is_live() -> bool:
    return request.headers.get(LIVE_HEADER) == "1"


def page(status: int, title: str, text: str) -> Response:
    """An error page; for the live refresh, just the line (the script shows it)."""
    if is_live():
        return make_response(text, status, {"Content-Type": "text/plain; charset=utf-8"})
    body = render_template("message.html", status=status, title=title, text=text)
    return make_response(body, status)


def log_database_down(exc: OperationalError | PoolTimeout) -> None:
    orig = getattr(exc, "orig", None)
    log.error("database unavailable: %s", type(orig or exc).__name__)


# -- the handlers ---------------------------------------------------------------------------


def _for_pages() -> bool:
    return request.blueprint in PAGES


def _wants_json() -> bool:
    return not request.accept_mimetypes.accept_html or request.path.startswith(
        ("/api/", "/callbacks/")
    )


def _task_id(exc: Exception) -> object:
    """The task a view was asked about (the store names it in the exception too)."""
    view_args = request.view_args or {}
    return view_args.get("task_id", exc.args[0] if exc.args else "")


def http_error(exc: HTTPException) -> Reply | HTTPException:
    status = exc.code or 500
    if _for_pages():
        if isinstance(exc, CSRFError):
            response = page(
                400,
                "The form has expired",
                "Nothing was changed. Go back, reload the page and try again.",
            )
        else:
            title = _PAGE_TITLES.get(status, exc.name)
            response = page(status, title, exc.description or exc.name)
    elif _wants_json():
        response, _ = error(status, _JSON_MESSAGES.get(status, exc.description or exc.name))
    elif status == 404:  # an address no route has, in a browser: the pages' own message page
        response = page(404, _PAGE_TITLES[404], "There is no page at this address.")
    else:
        return exc
    for name, value in exc.get_headers():  # Retry-After on 429, Allow on 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, status


def database_down(exc: OperationalError | PoolTimeout) -> Reply:
    # the sender (the upstream for callbacks) should try again; nothing was half-written
    log_database_down(exc)
    if _for_pages():
        response = page(503, "The database is unavailable", "Try again in a few seconds.")
    else:
        response, _ = error(503, DATABASE_DOWN)
    response.headers["Retry-After"] = "5"
    return response, 503


def unexpected(exc: Exception) -> Reply:
    log.exception("unhandled error on %s %s", request.method, request.path)
    if _for_pages():
        return page(500, "Something went wrong", "The error has been logged.")
    return error(500, UNEXPECTED)


def not_found(exc: LookupError) -> Reply:
    if isinstance(exc, KeyError | IndexError):
        return unexpected(exc)  # a bug in our code, not a task that is not there
    task_id = _task_id(exc)
    if _for_pages():
        return page(404, "No such task", f"There is no task {task_id}.")
    return error(404, f"no task {task_id}")


def invalid_action(exc: store.InvalidAction) -> Reply:
    if not _for_pages():
        return error(409, str(exc))
    flash(str(exc), "error")  # shown on the task's page, where the button was
    task_id = (request.view_args or {}).get("task_id")
    target = url_for("dashboard.detail", task_id=task_id) if task_id is not None else "/"
    return redirect(target, code=303)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(OperationalError, database_down)
    # every pooled connection busy (waiting for a locked SQLite): as if the database were down
    app.register_error_handler(PoolTimeout, database_down)
    app.register_error_handler(LookupError, not_found)
    app.register_error_handler(store.InvalidAction, invalid_action)
    app.register_error_handler(Exception, unexpected)
