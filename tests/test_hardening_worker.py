"""A worker killed mid-download (issue 9, item 9): its leases and its partial files.

Before the worker heartbeat, a worker killed with SIGKILL mid-download left a `.part` file
for ever and its task leased for half an hour, `tracker archive --missing` included, while
the upstream's link expires within the hour. Now every claiming process keeps a row in
`workers`; a lease whose holder's row went stale (60 s; the spawned processes here are given
STALE_AFTER) is taken over and its partial files removed. The process tests kill a real
`tracker worker` mid-download from a video origin on 127.0.0.1 that holds its answer; the
others check each kind of lease in-process.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.held import STALE_AFTER, VIDEO, held_video, partials
from tests.support.media import Origin, add_completed, load
from tests.support.waiting import wait_for
from tests.support.workers import KEY
from tracker.db import Database
from tracker.flows import archive as media
from tracker.flows import worker
from tracker.tasks import heartbeats, machine, store
from tracker.tasks.models import Task, WorkerBeat, utcnow
from tracker.tasks.store import NewTask
from tracker.upstream.client import LumaClient
from tracker.upstream.dialects import Request


def kill_mid_download(db: Database, origin: Origin, spawn: Any, media_dir: Path) -> int:
    """A worker downloading a completed task's video is killed with SIGKILL; the task's id."""
    release = threading.Event()
    task_id = add_completed(db, origin.raw("/held.mp4", held_video(release)))
    first = spawn(media_dir, stale_after=STALE_AFTER)
    wait_for(lambda: origin.hits and partials(media_dir), timeout=60, interval=0.1)
    first.popen.kill()
    first.popen.wait(timeout=10)
    assert partials(media_dir), "the killed worker left its partial file"
    task = load(db, task_id)
    assert task.media_path is None and task.next_archive_at > utcnow(), "and its lease"
    release.set()  # the origin answers in full from now on
    return task_id


@pytest.mark.slow
def test_a_worker_killed_mid_download_is_taken_over_by_the_next_one(
    db: Database, origin: Origin, spawn: Any, tmp_path: Path
) -> None:
    media_dir = tmp_path / "media"
    task_id = kill_mid_download(db, origin, spawn, media_dir)

    second = spawn(media_dir, stale_after=STALE_AFTER)
    # the killed worker's heartbeat goes stale after STALE_AFTER: generous bounds, a loaded machine
    wait_for(lambda: load(db, task_id).media_path, timeout=180, interval=0.5)

    assert (media_dir / f"{task_id}.mp4").read_bytes() == VIDEO
    assert partials(media_dir) == [], "the dead worker's partial file was removed"
    task = load(db, task_id)
    assert task.archive_error is None and task.next_archive_at is None

    def claims_of(pid: int) -> int:
        with db.read() as session:
            row = session.scalar(select(WorkerBeat).where(WorkerBeat.pid == pid))
            assert row is not None, "a running worker has its heartbeat row"
            return row.tasks_claimed

    wait_for(lambda: claims_of(second.popen.pid) >= 1, timeout=60)  # written with a beat

    assert second.signal(15) == 0
    with db.read() as session:
        pids = set(session.scalars(select(WorkerBeat.pid)))
    assert second.popen.pid not in pids, "a clean stop removes its row"
    assert KEY not in second.text()


@pytest.mark.slow
def test_archive_missing_takes_over_from_a_killed_worker(
    db: Database, origin: Origin, spawn: Any, tmp_path: Path
) -> None:
    media_dir = tmp_path / "media"
    task_id = kill_mid_download(db, origin, spawn, media_dir)

    def archive_missing() -> str | None:
        proc = spawn(media_dir, "archive", "--missing", stale_after=STALE_AFTER)
        assert proc.popen.wait(timeout=60) == 0, proc.text()
        return load(db, task_id).media_path

    # each run leaves alone what a live process may still be downloading; once STALE_AFTER
    # has passed the killed worker counts as dead and a run takes its task
    wait_for(archive_missing, timeout=180, interval=1)

    assert (media_dir / f"{task_id}.mp4").read_bytes() == VIDEO
    assert partials(media_dir) == []


# -- each kind of lease, in-process -------------------------------------------------------------


def add_worker(db: Database, name: str, *, seen_ago: float) -> str:
    now = utcnow()
    with db.write() as session:
        session.add(
            WorkerBeat(
                id=name,
                host="elsewhere",
                pid=4242,
                started_at=now - timedelta(seconds=3600),
                last_seen_at=now - timedelta(seconds=seen_ago),
                tasks_claimed=1,
            )
        )
    return name


def hold(db: Database, task_id: int, state: str, holder: str | None) -> None:
    """The task as a claim leaves it: leased for another 100 s by `holder`."""
    with db.write() as session:
        task = session.get(Task, task_id)
        assert task is not None
        if state != task.state:
            store.set_state(session, task, state)
        task.claimed_until = utcnow() + timedelta(seconds=100)
        task.claimed_by = holder
        task.next_check_at = utcnow() - timedelta(seconds=1)


def test_a_send_held_by_a_dead_worker_is_outcome_unknown_and_never_resent(
    db: Database, make_settings: Any, sim: Any
) -> None:
    dead = add_worker(db, "gone:1:aaaaaaaa", seen_ago=heartbeats.STALE_AFTER + 30)
    alive = add_worker(db, "here:2:bbbbbbbb", seen_ago=1)
    ids = [store.create(db, NewTask(kind="generate", user_prompt="fog")).id for _ in range(3)]
    for task_id, holder in zip(ids, (dead, alive, None), strict=True):
        hold(db, task_id, "submitting", holder)  # None: the web process sent it

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
        task_id = store.create(db, NewTask(kind="generate", user_prompt="dunes")).id
        created = client.send(Request("/luma/generations", {"user_prompt": "dunes"}))
        upstream_id = created.update.upstream_id
        with db.write() as session:
            session.execute(update(Task).where(Task.id == task_id).values(upstream_id=upstream_id))
        hold(db, task_id, "pending", holder)
        ids.append(task_id)

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
        with db.write() as session:  # as media._claim leaves it
            session.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(next_archive_at=utcnow() + timedelta(seconds=1800), claimed_by=holder)
            )
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

    assert load(db, ids[0]).media_path == f"{ids[0]}.mp4"
    assert [load(db, i).media_path for i in ids[1:]] == [None, None]
    assert partials(media_dir) == sorted(name for name, kept in names.items() if kept)


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
