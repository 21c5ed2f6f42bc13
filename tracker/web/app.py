"""The Flask app, built as Flask's tutorial (flaskr) builds its own: settings, then
extensions, then blueprints. The request hooks and the WSGI layers are put in place here,
in one place each, in the order they run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from tracker import logs, redact
from tracker.db import WEB_LOCK_WAIT, Database
from tracker.flows.services import Services, make_client, start, warn_about
from tracker.settings import Settings
from tracker.web import (
    MAX_ID,
    api,
    auth,
    callbacks,
    dashboard,
    media,
    monitoring,
    openapi,
    pages,
    register_error_handlers,
    security,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    """The web app, from the environment's settings unless given (the tests give theirs)."""
    settings = start(settings)  # as the worker and the CLI start (tracker/flows/services.py)
    app = Flask("tracker", instance_relative_config=False)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        SECRET_KEY=settings.secret_key or None,
    )
    if isinstance(app.json, DefaultJSONProvider):  # Flask's own, unless an extension swapped it
        app.json.sort_keys = False
    # every <int:...> in every route: a number past what the database holds is a 404, not a 500
    app.url_map.converters["int"] = BoundedInt
    services = Services(
        settings=settings,
        db=db or Database(settings.database_url, lock_wait=WEB_LOCK_WAIT),
        client=make_client(settings),
    )
    app.extensions["tracker"] = services  # what views reach through tracker.web.services()

    # -- extensions
    register_error_handlers(app)  # every error as a page or as JSON (tracker/web/__init__.py)
    security.init_app(app, settings)  # the session's key and cookie, CSRF's settings
    auth.init_app(app)  # the counters of wrong tokens, by client address
    pages.init_app(app)  # the templates' filters
    metrics_on = monitoring.init_app(app, settings)  # this process's metrics (TRACKER_METRICS)
    csrf = CSRFProtect()  # a token on every form; the API and the callbacks have their own rules
    csrf.exempt(api.bp)
    csrf.exempt(callbacks.bp)

    # -- blueprints
    app.register_blueprint(callbacks.bp)  # POST /callbacks/luma/<token>
    app.register_blueprint(api.bp)  # /api: tasks, the account, webhook deliveries
    app.register_blueprint(dashboard.bp)  # the pages, /login, /logout, /assets
    app.register_blueprint(media.bp)  # /media: archived videos and thumbnails
    app.register_blueprint(openapi.bp)  # GET /api/openapi.json
    app.register_blueprint(monitoring.bp)  # GET /readyz, GET /api/workers
    if metrics_on:
        app.register_blueprint(monitoring.metrics_bp)  # GET /metrics

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    # -- before each request, in this order (the first to answer ends the request)
    if metrics_on:
        app.before_request(monitoring.start_timer)  # first: the timing covers the hooks below
    app.before_request(_note_task)  # the task a request names, on its log lines
    app.before_request(security.limit_body)  # 413 for a body too large, before it is read
    app.before_request(security.check_host(settings))  # 400 for a Host not one of our names
    app.before_request(security.check_api_request)  # 403 another site, 415 not JSON (API)
    csrf.init_app(app)  # 400 for a form without its session's token; its own hook, last
    # (then each blueprint's own: the API's token, the dashboard's sign-in, the media's)

    # -- after each request: Flask runs these last registered first
    if metrics_on:
        app.after_request(monitoring.stop_timer)  # last: the timing covers the hook below
    app.after_request(security.harden(settings))  # the headers every answer carries

    # -- WSGI layers, innermost first (a request meets them outermost first)
    wsgi: WSGIApplication = app.wsgi_app
    wsgi = callbacks.FastPath(wsgi, services)  # a plain callback answered without Flask
    # X-Request-ID (an incoming one that holds a secret is replaced, not logged), and the
    # request's id on its log lines
    wsgi = logs.RequestIds(wsgi, _not_secret)
    if settings.trusted_proxies:  # the client's address, scheme and host as our proxy saw
        hops = settings.trusted_proxies
        wsgi = ProxyFix(wsgi, x_for=hops, x_proto=hops, x_host=hops)
    # Flask documents this assignment as the way to add WSGI middleware, but types wsgi_app
    # as a method, which mypy will not let be assigned. Under gunicorn's gevent worker,
    # wsgi.py puts the admission gate (admission.py) around all of these.
    app.wsgi_app = wsgi  # type: ignore[method-assign]

    warn_about(settings, web=True)
    return app


class BoundedInt(IntegerConverter):
    """Route integers fit the id column, so a huge one is a 404 and never reaches the database."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def _note_task() -> None:
    """A request about one task (/api/tasks/<task_id>, /tasks/<task_id>...): its lines say so."""
    task = (request.view_args or {}).get("task_id")
    if isinstance(task, int):
        logs.task_id.set(task)  # RequestIds puts the previous value back after the request
        request.environ[logs.TASK_ENVIRON_KEY] = task  # for gunicorn's access line


def _not_secret(given: str) -> bool:
    """Nothing `redact_line` would mask: a known secret, or a word shaped like a token (log
    lines mask those words; the JSON log's request_id field would show the id whole)."""
    return redact.redact_line(given) == given
