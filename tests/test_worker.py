"""The worker in-process: passes of `run_once` against the simulated upstream over real HTTP.

Every test runs on SQLite and on PostgreSQL (the `db` fixture). Waiting uses deadlines,
never timed assertions: what is asserted is the order of events and the counts.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from lumasim.simulator import Simulator
from tests.support.factory import load_task, make_task, set_fields
from tests.support.held import held_video, partials
from tests.support.media import Origin, add_completed
from tests.support.workers import SimFactory, add_worker, all_in, new_tasks, simulators, states
from tracker.db import Database
from tracker.flows import archive as media
from tracker.flows import worker
from tracker.settings import Settings
from tracker.tasks import heartbeats, machine
from tracker.tasks.models import Task, utcnow
from tracker.upstream.client import LumaClient
from tracker.upstream.operations import Request


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    yield from simulators()


def drive(
    settings: Settings, db: Database, done: Callable[[], bool], timeout: float = 15.0
) -> Counter[str]:
    """Run passes until `done()`; the summed summaries come back."""
    totals: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    while True:
        totals.update(worker.run_once(settings, db=db))
        if done():
            return totals
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout} s: {states(db)}")
        time.sleep(0.05)


def records(sim: Simulator, *routes: str) -> list[Any]:
    return [r for r in list(sim.requests) if r.route in routes]


def events(db: Database, task_id: int) -> list[tuple[str, str | None]]:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return [(e.source, e.note) for e in task.events]


@pytest.mark.parametrize("batch_shape", ["list", "wrapped", "none"])
def test_tasks_whose_callbacks_never_come_complete_by_polling(
    db: Database, live: Any, make_settings: Any, make_sim: SimFactory, batch_shape: str
) -> None:
    sim = make_sim(batch_shape=batch_shape)
    app = live(callbacks=False, luma_api_base=sim.url, poll_after=0.2)
    ids = []
    for n in range(4):
        answer = requests.post(
            f"{app.url}/api/tasks", json={"user_prompt": f"a lighthouse, take {n}"}, timeout=10
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["state"] == "pending"
        ids.append(answer.json()["id"])

    settings = make_settings(luma_api_base=sim.url, poll_after=0.2)
    totals = drive(settings, db, lambda: all_in(db, {"completed"}))

    assert totals["errors"] == 0
    assert totals["polled"] >= 4
    for task_id in ids:
        shown = requests.get(f"{app.url}/api/tasks/{task_id}", timeout=5).json()
        assert shown["state"] == "completed"
        assert shown["video_url"].startswith(sim.url)
        assert any(e["source"] == "poll" for e in shown["events"])
    assert not [r for r in sim.requests if r.route == "create" and r.status != 201]
    if batch_shape == "none":
        # the batch endpoint was tried once, then this process remembered and asked one by one
        assert len(records(sim, "batch")) == 1
        assert len(records(sim, "query")) >= 4
    else:
        assert records(sim, "query") == []
    with db.read() as session:
        assert session.scalar(select(Task.id).where(Task.claimed_until.is_not(None))) is None


@pytest.mark.parametrize("route", ["query", "batch"])
def test_a_flaky_upstream_does_not_break_the_loop_and_retry_after_is_honoured(
    db: Database, make_settings: Any, make_sim: SimFactory, route: str
) -> None:
    sim = make_sim(batch_shape="none" if route == "query" else "list")
    # one query at a time: the order of requests is then the worker's order of decisions
    settings = make_settings(
        luma_api_base=sim.url, poll_after=0.2, poll_max_interval=1.0, poll_concurrency=1
    )
    ids = new_tasks(db, 3)
    sim.fail_next(route, status=503)
    sim.fail_next(route, status=429, headers={"Retry-After": "1.5"}, body={"detail": "slow down"})
    sim.fail_next(route, status=200, body="<html><body>Gateway says hello</body></html>")
    if route == "query":  # (three failed batches in a row would retire the batch endpoint)
        sim.fail_next(route, status=500, body="<html><h1>500 Internal Server Error</h1></html>")
        sim.fail_next(route, status=503, times=2)

    totals = drive(settings, db, lambda: all_in(db, {"completed"}), timeout=25)

    assert set(states(db, ids).values()) == {"completed"}
    assert sim.creates == 3
    # a failed batch is asked again one by one in the same pass; a failed query is an error
    assert totals["errors"] >= (3 if route == "query" else 1)
    asked = sorted(records(sim, "query", "batch"), key=lambda r: r.started)
    [limited] = [r for r in asked if r.status == 429]
    later = [r for r in asked if r.started > limited.started]
    assert later, "the worker went on after the 429"
    assert all(r.started >= limited.ended + 1.5 for r in later), "a query came before Retry-After"
    notes = [note or "" for task_id in ids for _source, note in events(db, task_id)]
    assert any("query failed" in note for note in notes)


def test_never_more_than_max_in_flight_tasks_upstream(
    db: Database, make_settings: Any, make_sim: SimFactory
) -> None:
    sim = make_sim(callbacks=False)
    settings = make_settings(luma_api_base=sim.url, poll_after=0.2, max_in_flight=3)
    ids = new_tasks(db, 8)

    totals = drive(settings, db, lambda: all_in(db, {"completed"}), timeout=30)

    assert totals["dispatched"] == 8
    assert sim.creates == 8
    assert sim.max_in_flight() == 3
    with db.read() as session:
        sent = [t.submitted_at for t in session.scalars(select(Task).order_by(Task.id))]
    assert len(sent) == len(ids)
    assert sent == sorted(sent), "queued tasks are sent oldest first"


def test_a_429_on_create_is_retried_after_retry_after_and_creates_exactly_one_task(
    db: Database, make_settings: Any, make_sim: SimFactory
) -> None:
    sim = make_sim()
    settings = make_settings(luma_api_base=sim.url, poll_after=0.2)
    sim.fail_next("create", status=429, headers={"Retry-After": "0.5"})
    older, newer = new_tasks(db, 2)

    first = worker.run_once(settings, db=db)
    assert first["dispatched"] == 0
    assert states(db) == {older: "queued", newer: "queued"}, "no other create during the wait"

    drive(settings, db, lambda: all_in(db, {"completed"}))
    assert sim.creates == 2
    refused, *sent = records(sim, "create")
    assert [refused.status] + [r.status for r in sent] == [429, 201, 201]
    assert all(r.started >= refused.ended + 0.5 for r in sent), "Retry-After was not honoured"
    with db.read() as session:
        task = session.get(Task, older)
        assert task is not None and task.upstream_id == sent[0].task_id, "the oldest goes first"
    assert any("not accepted now" in (note or "") for _s, note in events(db, older))


@pytest.mark.parametrize("failure", ["HTTP 500 after creating", "timeout after creating"])
def test_an_ambiguous_create_is_not_resent_until_the_user_resends_it(
    db: Database, live: Any, make_settings: Any, make_sim: SimFactory, failure: str
) -> None:
    sim = make_sim()
    overrides: dict[str, Any] = {"luma_api_base": sim.url, "poll_after": 0.2, "read_timeout": 0.5}
    app = live(callbacks=False, **overrides)
    if failure.startswith("HTTP"):
        sim.fail_next("create", status=500, after=True)
    else:
        sim.fail_next("create", status=201, delay=1.5, after=True)

    answer = requests.post(f"{app.url}/api/tasks", json={"user_prompt": "a red kite"}, timeout=10)
    task = answer.json()
    assert task["state"] == "rejected"
    assert "outcome unknown" in task["failure_reason"]
    assert sim.creates == 1

    settings = make_settings(**overrides)
    for _ in range(3):
        worker.run_once(settings, db=db)
        time.sleep(0.1)
    assert sim.creates == 1, "an ambiguous create was sent again without the user"
    assert states(db) == {task["id"]: "rejected"}

    resent = requests.post(f"{app.url}/api/tasks/{task['id']}/resend", json={}, timeout=10).json()
    assert resent["state"] == "pending"
    assert any("resent as attempt 2" in (e["note"] or "") for e in resent["events"])
    drive(settings, db, lambda: all_in(db, {"completed"}))
    assert sim.creates == 2


def test_a_task_whose_callbacks_arrive_is_never_queried(
    db: Database, live: Any, make_settings: Any, make_sim: SimFactory
) -> None:
    sim = make_sim(callbacks=True)
    # poll_after is longer than any gap between this task's callbacks, and short enough to
    # poll a task whose callbacks stopped: the worker queries only when news stops
    app = live(callbacks=True, luma_api_base=sim.url, poll_after=1.0)
    settings = make_settings(luma_api_base=sim.url, poll_after=1.0)
    answer = requests.post(f"{app.url}/api/tasks", json={"user_prompt": "tide pools"}, timeout=10)
    task_id = answer.json()["id"]

    drive(settings, db, lambda: all_in(db, {"completed"}))
    deadline = time.monotonic() + 1.2  # past poll_after: a quiet task would be due by now
    while time.monotonic() < deadline:
        worker.run_once(settings, db=db)
        time.sleep(0.1)

    assert records(sim, "query", "batch") == []
    sources = [source for source, _ in events(db, task_id)]
    assert "callback" in sources
    assert "poll" not in sources


def test_a_pass_recovers_interrupted_sends_and_times_out_old_tasks(
    db: Database, make_settings: Any
) -> None:
    settings = make_settings(task_timeout=60.0)
    past = utcnow() - timedelta(seconds=120)
    stuck = make_task(db, "submitting", claimed_until=past).id  # its sender's lease ran out
    old = make_task(db, "queued", created_at=past).id

    summary = worker.run_once(settings, db=db)

    assert summary == {
        "dispatched": 0,
        "polled": 0,
        "timed_out": 1,
        "recovered": 1,
        "reconciled": 0,
        "archived": 0,
        "errors": 0,
    }
    assert states(db) == {stuck: "rejected", old: "timed_out"}
    with db.read() as session:
        task = session.get(Task, stuck)
        assert task is not None and "outcome unknown" in (task.failure_reason or "")


# -- leases held by a dead worker are taken over (issue 9, item 9), each kind in-process -------


def hold(db: Database, state: str, holder: str | None, **fields: Any) -> int:
    """A task as a claim leaves it, in `state`: leased for another 100 s by `holder`; its id."""
    lease = {"claimed_until": utcnow() + timedelta(seconds=100), "claimed_by": holder}
    return make_task(db, state, next_check_at=utcnow() - timedelta(seconds=1), **lease, **fields).id


def test_a_send_held_by_a_dead_worker_is_outcome_unknown_and_never_resent(
    db: Database, make_settings: Any, sim: Any
) -> None:
    dead = add_worker(db, "gone:1:aaaaaaaa", seen_ago=heartbeats.STALE_AFTER + 30)
    alive = add_worker(db, "here:2:bbbbbbbb", seen_ago=1)
    # None: the web process sent it
    ids = [hold(db, "submitting", holder, user_prompt="fog") for holder in (dead, alive, None)]

    summary = worker.run_once(make_settings(luma_api_base=sim.url), db=db)

    assert summary["recovered"] == 1 and summary["dispatched"] == 0
    assert sim.creates == 0, "the money guard: a create in flight is never resent"
    with db.read() as session:
        found = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(ids)))}
    assert found[ids[0]].state == "rejected"
    assert (found[ids[0]].failure_reason or "").startswith(machine.OUTCOME_UNKNOWN)
    assert [found[i].state for i in ids[1:]] == ["submitting", "submitting"]


def test_a_poll_lease_held_by_a_dead_worker_is_taken(
    db: Database, make_settings: Any, sim: Any
) -> None:
    dead = add_worker(db, "gone:1:aaaaaaaa", seen_ago=heartbeats.STALE_AFTER + 30)
    alive = add_worker(db, "here:2:bbbbbbbb", seen_ago=1)
    client = LumaClient(sim.url, "", connect_timeout=2, read_timeout=3)
    ids = []
    for holder in (dead, alive, "never-registered:3:cc"):
        created = client.send(Request("/luma/generations", {"user_prompt": "dunes"}))
        upstream_id = created.update.upstream_id
        ids.append(hold(db, "pending", holder, user_prompt="dunes", upstream_id=upstream_id))

    summary = worker.run_once(make_settings(luma_api_base=sim.url), db=db)

    assert summary["polled"] == 1
    with db.read() as session:
        polled = [
            t.id
            for t in session.scalars(select(Task).where(Task.id.in_(ids)))
            if any(e.source == "poll" for e in t.events)
        ]
    assert polled == [ids[0]]


def test_an_archive_lease_held_by_a_dead_worker_is_taken_and_its_partials_removed(
    db: Database, make_settings: Any, origin: Origin
) -> None:
    settings = make_settings()
    media_dir = Path(settings.media_dir)
    media_dir.mkdir(parents=True)
    dead = add_worker(db, "gone:1:aaaaaaaa", seen_ago=heartbeats.STALE_AFTER + 30)
    alive = add_worker(db, "here:2:bbbbbbbb", seen_ago=1)
    release = threading.Event()
    release.set()
    ids = [add_completed(db, origin.raw(f"/{n}.mp4", held_video(release))) for n in range(3)]
    for task_id, holder in zip(ids, (dead, alive, None), strict=True):
        lease = utcnow() + timedelta(seconds=1800)  # as media._claim leaves it
        set_fields(db, task_id, next_archive_at=lease, claimed_by=holder)
    names = {
        f".{ids[0]}.mp4.{heartbeats.file_tag(dead)}.k2j3h4g5.part": False,  # dead writer
        f".{ids[1]}.mp4.{heartbeats.file_tag(alive)}.k2j3h4g5.part": True,  # live writer
        f".{ids[2]}.mp4.abcd1234.part": True,  # no writer known, recent
        ".99.mp4.abcd1234.part": False,  # no writer known, untouched for an hour
        ".98.mp4.0123456789ab.abcd1234.part": False,  # a writer long gone (no row)
    }
    for name in names:
        (media_dir / name).write_bytes(b"half a video")
    hour_ago = time.time() - 3600
    os.utime(media_dir / ".99.mp4.abcd1234.part", (hour_ago, hour_ago))

    beat = heartbeats.Heartbeat(db, heartbeats.new_id())
    with beat.running():
        client = LumaClient("http://127.0.0.1:9", "")
        assert media.archive_due(db, settings, client, limit=10, holder=beat) == 1
        assert media.remove_stale_partials(db, settings) >= 1

    assert load_task(db, ids[0]).media_path == f"{ids[0]}.mp4"
    assert [load_task(db, i).media_path for i in ids[1:]] == [None, None]
    assert partials(media_dir) == sorted(name for name, kept in names.items() if kept)
