"""Shared fixtures: real databases, the app in a real server thread, the simulated upstream.

Every test that takes `db` runs on SQLite, and again on PostgreSQL when
TEST_DATABASE_URL is set (CI sets it). Migrations run once per database and
session; each test starts from empty tables.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tracker import create_app
from tracker.db import Database
from tracker.migrate import upgrade
from tracker.settings import Settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])


def postgres_url() -> str:
    url = TEST_DATABASE_URL
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'tracker.db'}"
    else:
        url = own_postgres_database(postgres_url())
        request.addfinalizer(lambda: drop_postgres_database(url))
    upgrade(url)
    return url


def own_postgres_database(url: str) -> str:
    """A database of this test run's own beside the given one, so parallel runs never collide."""
    name = f"tracker_test_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def _session_database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def db(_session_database: Database) -> Database:
    """An empty, migrated database (tables emptied before the test, counters zeroed)."""
    with _session_database.write() as session:
        session.execute(text("DELETE FROM task_events"))
        session.execute(text("DELETE FROM tasks"))
        session.execute(text("DELETE FROM accounts"))
        session.execute(text("DELETE FROM workers"))
        session.execute(text("UPDATE state_counts SET count = 0"))
    return _session_database


class _QuietHandler(WSGIRequestHandler):
    """No request log: callback paths hold secrets, and the test output stays readable."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Dispatch:
    """Lets the server pick its port before the app (which needs its own URL) exists."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@dataclass
class LiveServer:
    url: str
    server: BaseWSGIServer
    thread: threading.Thread
    app: Any = None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(app_factory: Callable[[str], Any]) -> LiveServer:
    """Serve an app on 127.0.0.1 in a thread; `app_factory(url)` builds it knowing its URL."""
    dispatch = _Dispatch()
    server = make_server("127.0.0.1", 0, dispatch, threaded=True, request_handler=_QuietHandler)
    url = f"http://127.0.0.1:{server.port}"
    dispatch.app = app_factory(url)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return LiveServer(url=url, server=server, thread=thread, app=dispatch.app)


@pytest.fixture
def sim() -> Iterator[Any]:
    from lumasim.simulator import Simulator

    simulator = Simulator(processing_after=0.2, complete_after=0.6).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def upstream() -> Iterator[Any]:
    """A test's own upstream that answers from a script (tests/scripted.py)."""
    from tests.scripted import ScriptedUpstream

    server = ScriptedUpstream()  # by default it accepts every create
    yield server
    server.stop()


@pytest.fixture
def make_settings(db: Database, tmp_path: Any) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        base = Settings(
            database_url=db.url,
            luma_api_base="http://127.0.0.1:9",  # nothing listens: tests that need one pass it
            luma_api_key="sk-test-upstream-key-0123456789",
            connect_timeout=2.0,
            read_timeout=3.0,
            poll_after=60.0,
            media_dir=str(tmp_path / "media"),
            media_allow_private=True,
        )
        return base.with_overrides(**overrides)

    return build


@pytest.fixture
def live(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., LiveServer]]:
    """Start the tracker in a real server thread: `live(luma_api_base=sim.url, ...)`."""
    servers: list[LiveServer] = []

    def start(*, callbacks: bool = True, **overrides: Any) -> LiveServer:
        def factory(url: str) -> Any:
            settings = make_settings(public_base_url=url if callbacks else "", **overrides)
            app = create_app(settings, db=db)
            app.testing = False
            return app

        server = serve(factory)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def api_task(base: str, task_id: int, **kwargs: Any) -> dict[str, Any]:
    response = requests.get(f"{base}/api/tasks/{task_id}", timeout=5, **kwargs)
    response.raise_for_status()
    return response.json()
