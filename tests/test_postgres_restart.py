"""PostgreSQL restarts: only requests in flight fail, callbacks that cannot be stored get 503
(so the sender retries), nothing is half-written, and the worker carries on.

The PostgreSQL restarted is the module's own (tests/support/private_postgres.py: initdb and
pg_ctl from Debian's packages in a temporary folder, on a free port), never the machine's
server and never TEST_DATABASE_URL's: skipped, saying why, where the server binaries are missing.

Still marked `serial`, though it no longer disturbs anything: `make test`'s second run is
`pytest -m serial`, which exits 5 (nothing collected) when no test carries the mark.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.databases import empty_tables
from tests.support.factory import make_task
from tests.support.private_postgres import PrivatePostgres, private_postgres_or_skip
from tests.support.waiting import api_task, wait_for
from tracker.db import Database
from tracker.dbschema import upgrade
from tracker.tasks.models import Task

pytestmark = [
    pytest.mark.slow,  # starts PostgreSQL and a worker process
    pytest.mark.serial,  # see the module's docstring: kept for `make test`, not for isolation
]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    """One private server for the module (initdb takes seconds), migrated once."""
    with private_postgres_or_skip() as server:
        upgrade(server.sqlalchemy_url)
        yield server


@pytest.fixture(scope="module")
def _private_database(postgres: PrivatePostgres) -> Iterator[Database]:
    database = Database(postgres.sqlalchemy_url)
    yield database
    database.dispose()


@pytest.fixture
def db(postgres: PrivatePostgres, _private_database: Database) -> Iterator[Database]:
    """conftest's `db` (so `live` and `make_settings` use it) on the private server, running."""
    postgres.start()  # started again if a test before this one failed while it was stopped
    empty_tables(_private_database)
    yield _private_database
    postgres.start()  # whatever happened, leave the server running


def test_restart_loses_no_answered_callback(postgres, live, sim) -> None:  # type: ignore[no-untyped-def]
    sim.callbacks = False  # this test plays the upstream's callbacks itself
    app = live(luma_api_base=sim.url).url
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a glass city"}, timeout=5)
    task = task.json()
    hook = sim.tasks[task["upstream_id"]].notify_hook
    processing = {"id": task["upstream_id"], "state": "processing"}

    postgres.restart()
    # the pool's connections died with the server; pre-ping replaces them
    answered = requests.post(hook, json=processing, timeout=10)
    assert answered.status_code == 200
    assert api_task(app, task["id"])["state"] == "processing"

    postgres.stop()
    try:
        refused = requests.post(
            hook, json={"id": task["upstream_id"], "state": "failed"}, timeout=10
        )
        assert refused.status_code == 503
        assert refused.headers.get("Retry-After")
        assert "Traceback" not in refused.text
    finally:
        postgres.start()

    # the sender retries: now it is stored, once, whole
    retried = requests.post(hook, json={"id": task["upstream_id"], "state": "failed"}, timeout=10)
    assert retried.status_code == 200
    after = api_task(app, task["id"])
    assert after["state"] == "failed"
    callbacks = [e for e in after["events"] if e["source"] == "callback"]
    assert [e["state_after"] for e in callbacks] == ["processing", "failed"]


def test_worker_survives_a_restart(postgres, db, sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "LUMA_API_BASE": sim.url,
        "LUMA_API_KEY": "sk-test-upstream-key-0123456789",
        "TRACKER_WORKER_INTERVAL": "0.2",
        "TRACKER_MEDIA_DIR": "",
    }
    tracker = Path(sys.executable).parent / "tracker"
    log = tmp_path / "worker.log"  # a file, not a pipe: a full pipe would block the worker
    worker = subprocess.Popen(
        [str(tracker), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        time.sleep(1.0)  # let it make a pass or two
        postgres.restart()
        postgres.stop()
        time.sleep(1.5)  # passes fail while the server is down
        postgres.start()
        assert worker.poll() is None, "the worker died with the database"
        queued = make_task(db, "queued", user_prompt="after the restart")

        def sent() -> bool:
            with db.read() as session:
                return session.get(Task, queued.id).state in ("pending", "processing", "completed")

        wait_for(sent, timeout=30)
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    text = log.read_text()
    assert worker.returncode == 0, text[-2000:]
    # an expected outage is one line a pass, not a traceback each time
    assert "database unavailable" in text and "Traceback" not in text, text[-3000:]
