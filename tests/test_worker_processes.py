"""`tracker worker` as a real process: SIGKILL mid-pass, SIGTERM, two workers at once.

The worker runs as `.venv/bin/tracker worker` with its settings in the environment, against
the simulated upstream over real HTTP, on the database of the `db` fixture.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from lumasim.simulator import Simulator
from tests.support.databases import TEST_DATABASE_URL
from tests.support.waiting import wait_for
from tests.support.workers import (
    KEY,
    TRACKER,
    Proc,
    SimFactory,
    all_in,
    new_tasks,
    simulators,
    states,
)
from tracker.db import Database
from tracker.tasks.models import Task, utcnow

pytestmark = pytest.mark.slow


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    yield from simulators()


@pytest.fixture
def spawn(db: Database, tmp_path: Path) -> Iterator[Any]:
    """Start `tracker <args>` with the test's database and settings in its environment."""
    started: list[Proc] = []

    def start(sim: Simulator, *args: str, **settings: Any) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
        env.pop("PUBLIC_BASE_URL", None)
        env.update(
            DATABASE_URL=db.url,
            LUMA_API_BASE=sim.url or "",
            LUMA_API_KEY=KEY,
            LUMA_CONNECT_TIMEOUT="0.5",
            LUMA_READ_TIMEOUT="2",
            TRACKER_MEDIA_DIR="",
            TRACKER_POLL_AFTER="0.2",
            TRACKER_WORKER_INTERVAL="0.05",
        )
        env.update({f"TRACKER_{k.upper()}": str(v) for k, v in settings.items()})
        proc = Proc([TRACKER, *(args or ("worker",))], env, tmp_path / f"proc{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(timeout=10)


def in_flight(sim: Simulator) -> list[Any]:
    """Single queries the simulator is holding right now (the batch probe is not one)."""
    return [r for r in list(sim.requests) if r.route == "query" and r.ended is None]


def answered(sim: Simulator) -> list[Any]:
    return [r for r in list(sim.requests) if r.route == "query" and r.status == 200]


def leased(db: Database) -> list[int]:
    now = utcnow()
    with db.read() as session:
        return list(session.scalars(select(Task.id).where(Task.claimed_until > now)))


def test_a_worker_killed_mid_pass_leaves_nothing_behind(
    db: Database, make_sim: SimFactory, spawn: Any
) -> None:
    sim = make_sim(callbacks=False, batch_shape="none")
    ids = new_tasks(db, 6)
    first = spawn(sim, poll_concurrency=2, lease_seconds=5)
    wait_for(lambda: answered(sim), timeout=15)  # past the batch probe: single queries now
    sim.latency = 5.0  # every query now hangs: the kill lands mid-request
    wait_for(lambda: in_flight(sim), timeout=10)
    first.popen.kill()
    first.popen.wait(timeout=10)
    held = leased(db)
    assert held, "the killed worker held leases"
    sim.latency = 0.0

    second = spawn(sim, poll_concurrency=2, lease_seconds=5)
    wait_for(lambda: all_in(db, {"completed"}), timeout=25)
    assert second.signal(signal.SIGTERM) == 0
    assert set(states(db, ids).values()) == {"completed"}
    assert sim.creates == 6


def test_sigterm_finishes_the_request_in_hand_and_releases_leases(
    db: Database, make_sim: SimFactory, spawn: Any
) -> None:
    sim = make_sim(callbacks=False, batch_shape="none", complete_after=30.0)
    ids = new_tasks(db, 6)
    proc = spawn(sim, poll_concurrency=2, lease_seconds=60)
    wait_for(lambda: answered(sim), timeout=15)  # past the batch probe: single queries now
    sim.latency = 1.0
    hanging = wait_for(lambda: in_flight(sim), timeout=10)
    assert leased(db)

    assert proc.signal(signal.SIGTERM) == 0
    assert leased(db) == [], "every lease was given back"
    for record in hanging:
        assert record.status == 200, "the query in hand was finished, not dropped"
    with db.read() as session:
        polled = {
            t.upstream_id
            for t in session.scalars(select(Task))
            if any(e.source == "poll" for e in t.events)
        }
    assert {record.task_id for record in hanging} <= polled, "their answers were applied"
    log = proc.text()
    assert "SIGTERM" in log and "stopped" in log
    assert "PUBLIC_BASE_URL is not set" in log
    assert KEY not in log
    assert set(states(db, ids).values()) <= {"pending", "processing"}


@pytest.mark.skipif(
    not TEST_DATABASE_URL,
    reason="two workers at once are a PostgreSQL setup: set TEST_DATABASE_URL (CI does)",
)
def test_two_workers_never_query_the_same_task_at_once(
    db: Database, make_sim: SimFactory, spawn: Any
) -> None:
    sim = make_sim(callbacks=False, batch_shape="none", complete_after=2.0, latency=0.15)
    ids = new_tasks(db, 16)
    workers = [
        spawn(sim, poll_concurrency=4, max_in_flight=16, lease_seconds=10, poll_after=0.1)
        for _ in range(2)
    ]
    wait_for(lambda: all_in(db, {"completed"}), timeout=30)
    assert [w.signal(signal.SIGTERM) for w in workers] == [0, 0]

    assert set(states(db, ids).values()) == {"completed"}
    assert sim.creates == 16, "no task was created twice"
    queries = [r for r in sim.requests if r.route == "query"]
    assert len(queries) >= 16
    # the simulator counts the most queries of one task in progress at once: 1 is no overlap
    assert sim.max_overlap("query") == 1


def test_poll_once_prints_its_summary(db: Database, make_sim: SimFactory, spawn: Any) -> None:
    sim = make_sim()
    [task_id] = new_tasks(db, 1)
    started = utcnow()
    proc = spawn(sim, "poll", "--once")
    assert proc.popen.wait(timeout=30) == 0
    summary = json.loads(proc.out.read_text())
    assert summary["dispatched"] == 1
    assert {"polled", "timed_out", "recovered", "errors"} <= set(summary)
    assert states(db) == {task_id: "pending"}
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.next_check_at is not None
        # scheduled by the send this pass made (not a wall-clock bound: the machine may be busy)
        assert task.next_check_at >= started
