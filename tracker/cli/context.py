"""What every `tracker` command runs with: the settings, checked, and the database.

The settings are the web app's own; a bad one stops the command with one line naming the
variable, not a traceback. Loading them also registers the secrets to mask in log lines and
points outgoing webhooks at TRACKER_NOTIFY_URL, as the web app and the worker do.
"""

from __future__ import annotations

import click

from tracker import settings as settings_module
from tracker.db import Database
from tracker.settings import Settings, SettingsError


def load_settings() -> Settings:
    from tracker import redact

    try:
        settings = settings_module.load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    redact.register(settings.luma_api_key, settings.api_token)
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
    from tracker.tasks import webhooks

    webhooks.configure(settings)  # events this command causes go to TRACKER_NOTIFY_URL too
    return settings


def open_database(settings: Settings) -> Database:
    return Database(settings.database_url)
