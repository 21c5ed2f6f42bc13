"""What every process sets up and builds once: logging, its settings, the database, the
upstream client.

Why its own module: the web app, the worker and the CLI all start here (`start`), and none
of it needs Flask, so the worker and the CLI can import it without pulling the web stack in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tracker import logs, redact
from tracker import settings as settings_module
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import webhooks
from tracker.upstream import accounts
from tracker.upstream.client import LumaClient

log = logging.getLogger("tracker")


@dataclass
class Services:
    """What every request needs, built once per process."""

    settings: Settings
    db: Database
    client: LumaClient


def setup_logging(level: int = logging.INFO) -> None:
    """Where log lines go: stderr, as text or JSON (TRACKER_LOG_FORMAT), secrets masked.

    For a program's entry point (wsgi.py, the `tracker` command) to call first, before any
    setting is read: a bad setting is then reported as a line like any other. A library
    call (`create_app` in a test) leaves the handlers to whoever runs it, and `start` masks
    what they write either way.
    """
    logs.configure(level)  # text, or one JSON object a line (TRACKER_LOG_FORMAT=json)
    redact.install_logging_filter()
    # alembic announces each of its plugins at INFO on every start; the migrations themselves stay
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def start(settings: Settings | None = None) -> Settings:
    """Set up this process (the web app, the worker, a `tracker` command) from its settings.

    In this order: every log record is masked and carries its request's and task's ids;
    the settings are loaded from the environment unless given (a bad one raises
    SettingsError, naming the variable); the secrets they hold are masked from then on (the
    upstream key, the admin token, the storage credentials); and outgoing webhooks go to
    TRACKER_NOTIFY_URL, signed with TRACKER_NOTIFY_SECRET (masked too). Every process of a
    deployment reads the same environment, so they agree. Safe to call again.
    """
    redact.install_logging_filter()
    logs.install_context()
    settings = settings or settings_module.load()
    pool = accounts.pool(settings)  # LUMA_ACCOUNT_*: a bad one raises SettingsError here
    redact.register(settings.luma_api_key, settings.api_token, *(a.key for a in pool))
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
    webhooks.configure(settings)
    return settings


def make_client(settings: Settings) -> LumaClient:
    """A connection pool at least as large as the worker's concurrency: none thrown away."""
    return accounts.client_for(accounts.from_settings(settings), settings)


def warn_about(settings: Settings, *, web: bool) -> None:
    """The start-up warnings a person running the service should see once."""
    if not settings.public_base_url:
        log.warning(
            "PUBLIC_BASE_URL is not set: tasks are sent without notify_hook, "
            "and only polling will track them"
        )
    if not settings.is_sqlite and not (settings.secret_key or settings.api_token):
        # several machines on one PostgreSQL: each would sign sessions and forms with its own
        # random key, and a form served by one would fail on the next
        log.warning(
            "neither TRACKER_SECRET_KEY nor TRACKER_API_TOKEN is set: on PostgreSQL, where "
            "several machines may serve the dashboard, set TRACKER_SECRET_KEY to one value on all"
        )
    if web and not settings.api_token:
        log.warning(
            "TRACKER_API_TOKEN is not set: anyone who can reach this service can submit work"
        )
