"""Luma task tracker: submit extends and generations, receive callbacks, keep every task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, current_app
from werkzeug.routing import IntegerConverter

from . import redact
from . import settings as settings_module
from .db import WEB_LOCK_WAIT, Database
from .settings import Settings
from .upstream import LumaClient

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What every request needs, built once per process."""

    settings: Settings
    db: Database
    client: LumaClient


MAX_ID = 2**31 - 1  # tasks.id is a 32-bit integer on PostgreSQL


class BoundedInt(IntegerConverter):
    """Route integers fit the id column, so a huge one is a 404 and never reaches the database."""

    def __init__(self, map, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def services() -> Services:
    return current_app.extensions["tracker"]


def make_client(settings: Settings) -> LumaClient:
    """A connection pool at least as large as the worker's concurrency: none thrown away."""
    return LumaClient(
        settings.luma_api_base,
        settings.luma_api_key,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        pool_size=max(10, settings.poll_concurrency + 2),
        flavor=settings.luma_api_flavor,
    )


def warn_about(settings: Settings, *, web: bool) -> None:
    """The start-up warnings a person running the service should see once."""
    # every process (web, worker) passes here first: the AWS keys are masked from the start
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
    if not settings.public_base_url:
        log.warning(
            "PUBLIC_BASE_URL is not set: tasks are sent without notify_hook, "
            "and only polling will track them"
        )
    if web and not settings.api_token:
        log.warning(
            "TRACKER_API_TOKEN is not set: anyone who can reach this service can submit work"
        )


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    settings = settings or settings_module.load()
    redact.register(settings.luma_api_key, settings.api_token)
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
    redact.install_logging_filter()
    from . import webhooks

    webhooks.configure(settings)
    app = Flask(__name__, instance_relative_config=False)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        SECRET_KEY=settings.secret_key or None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # every <int:...> in every route: a number past what the database holds is a 404, not a 500
    app.url_map.converters["int"] = BoundedInt
    app.extensions["tracker"] = Services(
        settings=settings,
        db=db or Database(settings.database_url, lock_wait=WEB_LOCK_WAIT),
        client=make_client(settings),
    )

    from .web import (
        api,
        dashboard,
        deliveries,
        errors,
        filters,
        hooks,
        openapi,
        readiness,
        security,
        sessions,
    )
    from .web import media as media_routes

    errors.init_app(app)
    security.init_app(app)
    # the session key and cookie; CSRF on every form, but not the API and callbacks (sameorigin.py)
    sessions.init_app(app, settings, exempt=(api.bp, deliveries.bp, hooks.bp))
    filters.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(deliveries.bp)  # the webhook delivery log, behind the API's token
    app.register_blueprint(hooks.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(media_routes.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(readiness.bp)  # GET /readyz, no token (like /healthz)

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    warn_about(settings, web=True)
    return app
