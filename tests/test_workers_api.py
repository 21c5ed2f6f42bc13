"""Live workers (issue 12, item 4): their heartbeat rows, GET /api/workers, the dashboard's panel
and its warning."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import requests

from tests.support.workers import add_worker
from tracker.db import Database
from tracker.tasks import heartbeats
from tracker.tasks.models import WorkerBeat, utcnow

TOKEN = "workers-test-admin-token-0123456789"
FIELDS = {
    "id",
    "host",
    "pid",
    "started_at",
    "last_seen_at",
    "tasks_claimed",
    "paused_until",
    "stale",
}


def test_api_workers_lists_each_worker_and_says_which_are_stale(live: Any, db: Database) -> None:
    add_worker(
        db, "machine-a:4242:live", 5, tasks_claimed=7, paused_until=utcnow() + timedelta(seconds=90)
    )
    add_worker(db, "machine-a:4243:gone", 61)
    server = live()
    answer = requests.get(f"{server.url}/api/workers", timeout=10)
    assert answer.status_code == 200
    workers = answer.json()["workers"]
    assert [set(w) for w in workers] == [FIELDS, FIELDS]
    by_id = {w["id"]: w for w in workers}
    live_one, gone = by_id["machine-a:4242:live"], by_id["machine-a:4243:gone"]
    assert live_one["stale"] is False and gone["stale"] is True
    assert live_one["tasks_claimed"] == 7 and live_one["host"] == "machine-a"
    assert live_one["pid"] == 4242 and live_one["paused_until"].endswith("Z")
    assert gone["paused_until"] is None and gone["last_seen_at"].endswith("Z")


def test_api_workers_wants_the_token_when_one_is_set(live: Any, db: Database) -> None:
    server = live(api_token=TOKEN)
    assert requests.get(f"{server.url}/api/workers", timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{server.url}/api/workers", headers=auth, timeout=10).json() == {
        "workers": []
    }


def test_the_dashboard_warns_when_no_worker_was_seen_for_a_minute(live: Any, db: Database) -> None:
    server = live()
    page = requests.get(f"{server.url}/", timeout=10).text
    assert 'id="no-worker"' in page and "No worker has been seen for a minute" in page

    add_worker(db, "machine-a:1:old", 120)
    page = requests.get(f"{server.url}/", timeout=10).text
    assert 'id="no-worker"' in page, "a stale worker is no worker"
    assert 'data-worker-id="machine-a:1:old" data-stale="true"' in page

    add_worker(db, "machine-b:2:new", 3, tasks_claimed=12)
    page = requests.get(f"{server.url}/", timeout=10).text
    assert 'id="no-worker"' not in page
    assert 'data-worker-id="machine-b:2:new" data-stale="false"' in page
    live_page = requests.get(f"{server.url}/", headers={"X-Live": "1"}, timeout=10).text
    assert 'id="workers"' in live_page, "the panel refreshes with the list"


def test_the_heartbeat_row_shows_what_get_api_workers_will(db: Database) -> None:
    paused = [0.0]
    beat = heartbeats.Heartbeat(db, heartbeats.new_id(), paused=lambda: paused[0])
    beat.register()
    beat.claimed(3)
    paused[0] = 30.0
    beat.beat()
    with db.read() as session:
        row = session.get(WorkerBeat, beat.id)
        assert row is not None
        assert (row.host, row.pid, row.tasks_claimed) == (os.uname().nodename, os.getpid(), 3)
        assert row.started_at <= row.last_seen_at
        assert row.paused_until is not None and row.paused_until > row.last_seen_at
    beat.stop()
    with db.read() as session:
        assert session.get(WorkerBeat, beat.id) is None
