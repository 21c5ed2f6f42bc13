"""PostgreSQL restarts: only requests in flight fail, callbacks that cannot be stored get 503
(so the sender retries), nothing is half-written, and the worker carries on.

Marked `serial`: it stops the server that the other PostgreSQL tests use, so `make test` runs
it alone, after them (and a run in one process puts it after the others: tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.databases import TEST_DATABASE_URL
from tests.support.factory import make_task
from tests.support.waiting import api_task, wait_for
from tracker.tasks.models import Task

pytestmark = [
    pytest.mark.skipif(
        not TEST_DATABASE_URL, reason="needs TEST_DATABASE_URL (CI sets it): restarts PostgreSQL"
    ),
    # PostgreSQL only: the `db` fixture's SQLite twin has no server to restart
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    pytest.mark.slow,  # restarts PostgreSQL and starts a worker process
    pytest.mark.serial,  # the other tests' PostgreSQL: `make test` runs this alone, after them
]


def _cluster(action: str, *, check: bool = True) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=check,
        timeout=120,
        capture_output=not check,
    )


@pytest.fixture
def postgres_only(db):  # type: ignore[no-untyped-def]
    assert db.is_postgres
    yield db
    _cluster("start", check=False)  # whatever happened, leave the server running


def test_restart_loses_no_answered_callback(postgres_only, live, sim) -> None:  # type: ignore[no-untyped-def]
    sim.callbacks = False  # this test plays the upstream's callbacks itself
    app = live(luma_api_base=sim.url).url
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a glass city"}, timeout=5)
    task = task.json()
    hook = sim.tasks[task["upstream_id"]].notify_hook
    processing = {"id": task["upstream_id"], "state": "processing"}

    _cluster("restart")
    # the pool's connections died with the server; pre-ping replaces them
    answered = requests.post(hook, json=processing, timeout=10)
    assert answered.status_code == 200
    assert api_task(app, task["id"])["state"] == "processing"

    _cluster("stop")
    try:
        refused = requests.post(
            hook, json={"id": task["upstream_id"], "state": "failed"}, timeout=10
        )
        assert refused.status_code == 503
        assert refused.headers.get("Retry-After")
        assert "Traceback" not in refused.text
    finally:
        _cluster("start")

    # the sender retries: now it is stored, once, whole
    retried = requests.post(hook, json={"id": task["upstream_id"], "state": "failed"}, timeout=10)
    assert retried.status_code == 200
    after = api_task(app, task["id"])
    assert after["state"] == "failed"
    callbacks = [e for e in after["events"] if e["source"] == "callback"]
    assert [e["state_after"] for e in callbacks] == ["processing", "failed"]


def test_worker_survives_a_restart(postgres_only, sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = postgres_only
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
        _cluster("restart")
        _cluster("stop")
        time.sleep(1.5)  # passes fail while the server is down
        _cluster("start")
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
    assert worker.returncode == 0, log.read_text()[-2000:]
