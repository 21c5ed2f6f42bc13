"""Shared fixtures: real databases, the app in a real server thread, the simulated upstream.

Every test that takes `db` runs on SQLite, and again on PostgreSQL when
TEST_DATABASE_URL is set (CI sets it). Migrations run once per database and
session; each test starts from empty tables.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.databases import (
    BACKENDS,
    drop_postgres_database,
    empty_tables,
    own_postgres_database,
    postgres_url,
)
from tests.support.receiver import Receiver
from tests.support.servers import LiveServer, serve
from tracker.db import Database
from tracker.dbschema import upgrade
from tracker.settings import Settings
from tracker.tasks import webhooks
from tracker.upstream import accounts
from tracker.web.app import create_app

if TYPE_CHECKING:  # imported where used: only the tests that take them load them
    from lumasim.simulator import Simulator
    from tests.support.scripted import ScriptedUpstream

# `tracker dev` (make run) leaves its settings in the checkout's instance/dev.env, which the task
# commands read (tracker/cli/actions.py): never in a test, unless it asks (tests/test_dev_env.py)
os.environ.setdefault("TRACKER_DEV_ENV", "0")

# The metrics files of this test process (and of what it starts) in a folder of its own: the
# default, instance/metrics, is the checkout's, shared with `make run` and with the other
# processes of a parallel run, whose counts a scrape here would add in.
_METRICS = tempfile.mkdtemp(prefix="tracker-test-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS
atexit.register(shutil.rmtree, _METRICS, ignore_errors=True)

# fails a test that starts a process without the `slow` mark (tests/support/spawning.py)
# the held-video origin and the archiving-worker spawner (tests/support/held.py): fixtures
pytest_plugins = ["tests.support.spawning", "tests.support.held", "tests.support.single_writer"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `serial` (they disturb what the others use: a PostgreSQL restart) run after
    every other test of a run, by their mark rather than by their file's name. `make test`
    runs them alone anyway (`pytest -m serial`, after the parallel run)."""
    items.sort(key=lambda item: item.get_closest_marker("serial") is not None)


@pytest.fixture(autouse=True)
def _process_state_afresh() -> None:
    """Each test starts with this process's module state as a new process has it, whatever ran
    here before it: no global webhook target (the last TRACKER_NOTIFY_URL configured, perhaps a
    receiver that is gone) and nothing an upstream taught about pausing (ports are reused)."""
    webhooks.configure(None)
    accounts.forget_manners()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'tracker.db'}"
    else:
        url = own_postgres_database(postgres_url())
        request.addfinalizer(lambda: drop_postgres_database(url))
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def _session_database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def db(_session_database: Database) -> Database:
    """An empty, migrated database (tables emptied before the test, counters zeroed)."""
    empty_tables(_session_database)
    return _session_database


@pytest.fixture
def sim() -> Iterator[Simulator]:
    from lumasim.simulator import Simulator

    simulator = Simulator(processing_after=0.2, complete_after=0.6).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A notify_hook receiver on 127.0.0.1 (tests/support/receiver.py)."""
    receiving = Receiver()
    yield receiving
    receiving.server.shutdown()
    receiving.server.server_close()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    """A test's own upstream that answers from a script (tests/support/scripted.py)."""
    from tests.support.scripted import ScriptedUpstream

    server = ScriptedUpstream()  # by default it accepts every create
    yield server
    server.stop()


@pytest.fixture
def make_settings(db: Database, tmp_path: Path) -> Callable[..., Settings]:
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
def make_app(make_settings: Callable[..., Settings], db: Database) -> Callable[..., Flask]:
    """The app on the test's database, for Flask's test client: `make_app(api_token=...)`."""

    def build(**overrides: Any) -> Flask:
        return create_app(make_settings(**overrides), db=db)

    return build


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    """Flask's test client on the app with the default test settings."""
    return make_app().test_client()


@pytest.fixture
def live(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., LiveServer]]:
    """Start the tracker in a real server thread: `live(luma_api_base=sim.url, ...)`."""
    servers: list[LiveServer] = []

    def start(*, callbacks: bool = True, **overrides: Any) -> LiveServer:
        def factory(url: str) -> Flask:
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
