"""GET /readyz: 200 only when the database answers and its schema is at the newest migration."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from alembic import command

from tests.support.blankdb import blank_database
from tests.support.databases import BACKENDS
from tests.support.servers import serve
from tracker.db import Database
from tracker.dbschema import alembic_config, upgrade
from tracker.settings import Settings
from tracker.web.app import create_app


def readyz(settings: Settings, db: Database | None = None) -> requests.Response:
    server = serve(lambda _url: create_app(settings, db=db))
    try:
        return requests.get(f"{server.url}/readyz", timeout=30)
    finally:
        server.stop()


def test_ready_on_a_migrated_database_without_a_token(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(api_token="admin-token-for-readyz")
    answer = readyz(settings, db)
    assert answer.status_code == 200
    assert answer.json() == {"ready": True}
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("kind", BACKENDS)
def test_not_ready_until_migrated(kind: str, tmp_path: Path) -> None:
    with blank_database(kind, tmp_path) as url:
        database = Database(url)
        try:
            settings = Settings(database_url=url, media_dir="")
            answer = readyz(settings, database)
            assert answer.status_code == 503
            assert answer.json() == {
                "ready": False,
                "reason": "migrations pending: the database has none applied; "
                "run `tracker db upgrade`",
            }

            command.upgrade(alembic_config(url), "0001")  # one migration behind
            answer = readyz(settings, database)
            assert answer.status_code == 503
            assert answer.json()["ready"] is False
            assert answer.json()["reason"].startswith(
                "migrations pending: the database is at 0001, this code needs "
            )

            upgrade(url)
            answer = readyz(settings, database)
            assert answer.status_code == 200 and answer.json() == {"ready": True}
        finally:
            database.dispose()


def test_not_ready_when_the_database_does_not_answer() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://tracker:db-password-123@127.0.0.1:{port}/tracker"
    settings = Settings(database_url=url, media_dir="")
    answer = readyz(settings, Database(url))
    assert answer.status_code == 503
    assert answer.json() == {
        "ready": False,
        "reason": "the database does not answer (OperationalError)",
    }
    assert "db-password-123" not in answer.text

    # /healthz still says the process is up
    server = serve(lambda _url: create_app(settings, db=Database(url)))
    try:
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        server.stop()
