"""The Flask app: settings in, blueprints and error handlers wired, Services attached."""

from __future__ import annotations

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from tracker import redact
from tracker import settings as settings_module
from tracker.db import WEB_LOCK_WAIT, Database
from tracker.flows.services import Services, make_client, warn_about
from tracker.settings import Settings
from tracker.web.routing import BoundedInt


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    settings = settings or settings_module.load()
    redact.register(settings.luma_api_key, settings.api_token)
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
    redact.install_logging_filter()
    from tracker.tasks import webhooks

    webhooks.configure(settings)  # events go to TRACKER_NOTIFY_URL; its secrets masked in logs
    app = Flask("tracker", instance_relative_config=False)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        SECRET_KEY=settings.secret_key or None,
    )
    if isinstance(app.json, DefaultJSONProvider):  # Flask's own, unless an extension swapped it
        app.json.sort_keys = False
    # every <int:...> in every route: a number past what the database holds is a 404, not a 500
    app.url_map.converters["int"] = BoundedInt
    app.extensions["tracker"] = Services(
        settings=settings,
        db=db or Database(settings.database_url, lock_wait=WEB_LOCK_WAIT),
        client=make_client(settings),
    )

    from tracker.web import (
        api,
        dashboard,
        deliveries,
        errors,
        filters,
        media,
        openapi,
        readiness,
        requestlog,
        security,
        sessions,
        workers,
    )
    from tracker.web import callbacks as hooks
    from tracker.web import metrics as metrics_routes

    metrics_routes.init_app(app)  # first: its timing covers the other hooks; GET /metrics
    hooks.init_app(app)  # the callback route, and its fast path under the WSGI layers below
    requestlog.init_app(app)  # X-Request-ID, and request_id/task_id on log lines

    errors.init_app(app)
    security.init_app(app)
    # the session key and cookie; CSRF on every form, but not the API and callbacks (sameorigin.py)
    sessions.init_app(app, settings, exempt=(api.bp, deliveries.bp, hooks.bp))
    filters.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(deliveries.bp)  # the webhook delivery log, behind the API's token
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(readiness.bp)  # GET /readyz, no token (like /healthz)
    workers.init_app(app)  # GET /api/workers, the dashboard's workers panel

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    warn_about(settings, web=True)
    return app
