"""A real `tracker worker` stopped mid-download, gracefully or not.

SIGTERM (graceful shutdown, issue 12, item 7): the download is abandoned at once (not waited
out, not counted as a failed attempt), its lease is given back, and the next worker archives
the task straight away instead of waiting for the lease to expire. (Finishing an in-flight
upstream query and giving back poll leases: tests/test_worker_processes.py.) gunicorn's
graceful_timeout covers the longest upstream request a web process may be in.

SIGKILL (issue 9, item 9): before the worker heartbeat, a killed worker left a `.part` file
for ever and its task leased for half an hour, `tracker archive --missing` included, while
the upstream's link expires within the hour. Now every claiming process keeps a row in
`workers`; a lease whose holder's row went stale (60 s; the spawned processes here are given
STALE_AFTER) is taken over and its partial files removed (each kind of lease in-process:
tests/test_worker.py).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.factory import load_task
from tests.support.held import STALE_AFTER, VIDEO, held_video, partials
from tests.support.media import Origin, add_completed
from tests.support.waiting import wait_for
from tests.support.workers import KEY
from tracker.db import Database
from tracker.tasks.models import WorkerBeat, utcnow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sigterm_abandons_the_download_and_gives_its_lease_back(
    db: Database, origin: Origin, spawn: Any, tmp_path: Path
) -> None:
    media_dir = tmp_path / "media"
    release = threading.Event()
    task_id = add_completed(db, origin.raw("/held.mp4", held_video(release)))
    first = spawn(media_dir)
    wait_for(lambda: origin.hits and partials(media_dir), timeout=60, interval=0.1)

    # the origin holds the rest of the video for two minutes: the worker must not wait
    assert first.signal(15) == 0
    task = load_task(db, task_id)
    assert task.media_path is None
    assert task.claimed_by is None, "the lease was given back"
    assert task.next_archive_at is not None and task.next_archive_at <= utcnow(), "due at once"
    assert task.archive_attempts == 0 and task.archive_error is None, "not a failed attempt"
    assert partials(media_dir) == [], "no partial file left"
    with db.read() as session:
        assert session.scalar(select(WorkerBeat).where(WorkerBeat.pid == first.popen.pid)) is None
    assert "abandoned" in first.text()

    release.set()
    second = spawn(media_dir)
    # no heartbeat to go stale and no lease to expire: the next worker takes it at once
    wait_for(lambda: load_task(db, task_id).media_path, timeout=40, interval=0.2)
    assert (media_dir / f"{task_id}.mp4").read_bytes() == VIDEO
    assert second.signal(15) == 0


# -- killed: the next worker takes over (issue 9, item 9) -------------------------------------


def kill_mid_download(db: Database, origin: Origin, spawn: Any, media_dir: Path) -> int:
    """A worker downloading a completed task's video is killed with SIGKILL; the task's id."""
    release = threading.Event()
    task_id = add_completed(db, origin.raw("/held.mp4", held_video(release)))
    first = spawn(media_dir, stale_after=STALE_AFTER)
    wait_for(lambda: origin.hits and partials(media_dir), timeout=60, interval=0.1)
    first.popen.kill()
    first.popen.wait(timeout=10)
    assert partials(media_dir), "the killed worker left its partial file"
    task = load_task(db, task_id)
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
    wait_for(lambda: load_task(db, task_id).media_path, timeout=180, interval=0.5)

    assert (media_dir / f"{task_id}.mp4").read_bytes() == VIDEO
    assert partials(media_dir) == [], "the dead worker's partial file was removed"
    task = load_task(db, task_id)
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
        return load_task(db, task_id).media_path

    # each run leaves alone what a live process may still be downloading; once STALE_AFTER
    # has passed the killed worker counts as dead and a run takes its task
    wait_for(archive_missing, timeout=180, interval=1)

    assert (media_dir / f"{task_id}.mp4").read_bytes() == VIDEO
    assert partials(media_dir) == []


def test_gunicorn_waits_as_long_as_the_longest_upstream_request(monkeypatch: Any) -> None:
    def graceful(**env: str) -> int:
        for name in ("LUMA_CONNECT_TIMEOUT", "LUMA_READ_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        spec = importlib.util.spec_from_file_location("_conf", ROOT / "gunicorn.conf.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.graceful_timeout

    assert graceful() == 5 + 30 + 5
    assert graceful(LUMA_CONNECT_TIMEOUT="2", LUMA_READ_TIMEOUT="60") == 2 + 60 + 5
