"""What every process builds once from its settings: the database, the upstream client.

Why its own module: the web app, the worker and the CLI all need these, and none of it
needs Flask, so the worker and the CLI can import it without pulling the web stack in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tracker import redact
from tracker.db import Database
from tracker.settings import Settings
from tracker.upstream import accounts
from tracker.upstream.client import LumaClient

log = logging.getLogger("tracker")


@dataclass
class Services:
    """What every request needs, built once per process."""

    settings: Settings
    db: Database
    client: LumaClient


def make_client(settings: Settings) -> LumaClient:
    """A connection pool at least as large as the worker's concurrency: none thrown away."""
    return accounts.client_for(accounts.from_settings(settings), settings)


def warn_about(settings: Settings, *, web: bool) -> None:
    """The start-up warnings a person running the service should see once."""
    # every process (web, worker) passes here first: the AWS keys are masked from the start
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
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
