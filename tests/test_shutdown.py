"""Graceful shutdown (issue 12, item 7): SIGTERM to a real `tracker worker` mid-download.

The download is abandoned at once (not waited out, not counted as a failed attempt), its
lease is given back, and the next worker archives the task straight away instead of
waiting for the lease to expire. (Finishing an in-flight upstream query and giving back
poll leases: tests/test_worker_processes.py.) gunicorn's graceful_timeout covers the
longest upstream request a web process may be in.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.held import VIDEO, held_video, partials
from tests.support.media import Origin, add_completed, load
from tests.support.waiting import wait_for
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
    task = load(db, task_id)
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
    wait_for(lambda: load(db, task_id).media_path, timeout=40, interval=0.2)
    assert (media_dir / f"{task_id}.mp4").read_bytes() == VIDEO
    assert second.signal(15) == 0


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
