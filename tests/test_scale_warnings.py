"""Several machines on PostgreSQL must share TRACKER_SECRET_KEY (issue 12, item 9): the
process warns at start when neither it nor TRACKER_API_TOKEN is set."""

from __future__ import annotations

import logging

import pytest

from tracker.flows.services import warn_about
from tracker.settings import Settings

PG = "postgresql+psycopg://u@db.example/tracker"
MESSAGE = "neither TRACKER_SECRET_KEY nor TRACKER_API_TOKEN is set"


@pytest.mark.parametrize("web", [True, False])
def test_postgresql_without_a_shared_key_warns(caplog: pytest.LogCaptureFixture, web: bool) -> None:
    with caplog.at_level(logging.WARNING):
        warn_about(Settings(database_url=PG), web=web)
    assert MESSAGE in caplog.text


@pytest.mark.parametrize(
    "settings",
    [
        Settings(database_url=PG, secret_key="shared-by-every-machine-0123"),
        Settings(database_url=PG, api_token="an-admin-token-0123456789"),
        Settings(database_url="sqlite:///x.db"),
    ],
)
def test_a_key_a_token_or_sqlite_needs_no_warning(
    caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    with caplog.at_level(logging.WARNING):
        warn_about(settings, web=True)
    assert MESSAGE not in caplog.text
