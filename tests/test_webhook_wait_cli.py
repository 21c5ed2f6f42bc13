"""?wait= on GET /api/tasks/<id>, the webhook settings, and the CLI that waits and downloads."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from tests.support.factory import make_task
from tracker import cli, signing
from tracker.db import Database
from tracker.settings import SettingsError, load
from tracker.tasks import store
from tracker.tasks.models import Task
from tracker.upstream.parse import Update

SECRET = "whsec_" + base64.b64encode(b"test-notify-secret-0123456789abcd").decode()


def _finish(db: Database, settings: Any, task_id: int, state: str, **fields: Any) -> None:
    with db.write() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.upstream_id = task.upstream_id or f"up-{task_id}"
        upd = Update(understood=True, state=state, upstream_id=task.upstream_id, **fields)
        store.apply(session, settings, task, upd, "callback", payload={"s": state})


@pytest.mark.parametrize("raw", ["-1", "61", "abc", "1e9", "nan", "", "Ù¡"])
def test_wait_out_of_range_is_a_400_naming_wait(db: Database, live: Any, raw: str) -> None:
    app = live()
    task = make_task(db, "queued", user_prompt="w")
    answer = requests.get(f"{app.url}/api/tasks/{task.id}", params={"wait": raw}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["field"] == "wait"


def test_wait_answers_as_soon_as_the_task_is_final(
    db: Database, live: Any, make_settings: Any
) -> None:
    app = live()
    task = make_task(db, "queued", user_prompt="w")
    _finish(db, make_settings(), task.id, "pending")
    assert requests.get(f"{app.url}/api/tasks/{task.id}?wait=0", timeout=5).json()["state"] == (
        "pending"
    )
    timer = threading.Timer(
        0.5,
        _finish,
        (db, make_settings(), task.id, "completed"),
        {"video_url": "https://cdn.example/v.mp4"},
    )
    timer.start()
    answer = requests.get(f"{app.url}/api/tasks/{task.id}?wait=30", timeout=40)
    timer.join()
    assert answer.status_code == 200
    assert answer.json()["state"] == "completed"  # it waited for the news, not the 30 s
    short = requests.get(f"{app.url}/api/tasks/999999?wait=1", timeout=5)
    assert short.status_code == 404


def test_waiters_past_the_cap_are_answered_at_once(db: Database, live: Any) -> None:
    from tracker.web import admission as waiting

    app = live()
    task = make_task(db, "queued", user_prompt="w")
    # threads, not greenlets, in this server: the cap is MAX_THREAD_WAITERS
    holders = [
        threading.Thread(
            target=requests.get, args=(f"{app.url}/api/tasks/{task.id}?wait=3",), daemon=True
        )
        for _ in range(waiting.MAX_THREAD_WAITERS)
    ]
    for holder in holders:
        holder.start()
    deadline = time.monotonic() + 5
    while waiting._waiters < waiting.MAX_THREAD_WAITERS and time.monotonic() < deadline:
        time.sleep(0.02)
    extra = requests.get(f"{app.url}/api/tasks/{task.id}?wait=3", timeout=5)
    assert extra.status_code == 200 and extra.headers["X-Tracker-Wait"] == "skipped"
    for holder in holders:
        holder.join()


def test_postgres_with_a_target_and_no_secret_refuses_to_start() -> None:
    env = {
        "DATABASE_URL": "postgresql://u@127.0.0.1/db",
        "TRACKER_NOTIFY_URL": "http://10.0.0.5/hook",
    }
    with pytest.raises(SettingsError, match="TRACKER_NOTIFY_SECRET"):
        load(env)
    assert load(env | {"TRACKER_NOTIFY_SECRET": SECRET}).notify_secrets == (SECRET,)
    with pytest.raises(SettingsError, match="TRACKER_NOTIFY_SECRET") as bad:
        load({"TRACKER_NOTIFY_SECRET": "whsec_not base64!"})
    assert "not base64" not in str(bad.value)  # a secret is never echoed
    with pytest.raises(SettingsError, match="TRACKER_NOTIFY_RETRY_SCHEDULE"):
        load({"TRACKER_NOTIFY_RETRY_SCHEDULE": "5,soon"})
    assert load({"TRACKER_NOTIFY_RETRY_SCHEDULE": "1,2"}).notify_retry_schedule == (1.0, 2.0)
    with pytest.raises(SettingsError, match="TRACKER_NOTIFY_URL"):
        load({"TRACKER_NOTIFY_URL": "ftp://x"})


def test_sqlite_generates_a_secret_into_instance_and_cli_prints_it(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'instance' / 'tracker.db'}",
        "TRACKER_NOTIFY_URL": "http://127.0.0.1:9/hook",
        "TRACKER_NOTIFY_SECRET": "",
    }
    settings = load(env)
    (secret,) = signing.signing_secrets(settings)
    assert secret.startswith("whsec_")
    assert (tmp_path / "instance" / "notify_secret").read_text().strip() == secret
    printed = CliRunner().invoke(cli.main, ["notify", "secret"], env=env)
    assert printed.exit_code == 0, printed.output
    assert printed.output.strip() == secret


def test_cli_submit_wait_exit_codes_and_download(
    db: Database, make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("LUMA_API_BASE", "http://127.0.0.1:9")
    monkeypatch.setenv("TRACKER_MEDIA_DIR", str(tmp_path / "media"))
    monkeypatch.setenv("LUMA_CONNECT_TIMEOUT", "0.2")
    settings = make_settings(media_dir=str(tmp_path / "media"))

    def finish_newest(state: str, **fields: Any) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.read() as session:
                newest = session.query(Task).order_by(Task.id.desc()).first()
            if newest is not None and newest.state == "queued":
                if state == "completed":  # archived at once, as the worker would soon after
                    (tmp_path / "media" / f"{newest.id}.mp4").write_bytes(b"video bytes")
                    with db.write() as session:
                        session.get(Task, newest.id).media_path = f"{newest.id}.mp4"  # type: ignore[union-attr]
                _finish(db, settings, newest.id, state, **fields)
                return
            time.sleep(0.05)

    runner = CliRunner()
    fail = threading.Thread(target=finish_newest, args=("failed",), kwargs={"failure_reason": "no"})
    fail.start()
    result = runner.invoke(cli.main, ["submit", "--prompt", "doomed", "--wait"])
    fail.join()
    assert result.exit_code == 1, result.output
    assert "failed: no" in result.output

    (tmp_path / "media").mkdir()
    done = threading.Thread(
        target=finish_newest, args=("completed",), kwargs={"video_url": "https://cdn.example/v"}
    )
    done.start()
    result = runner.invoke(cli.main, ["submit", "--prompt", "fine", "--wait"])
    done.join()
    with db.read() as session:
        newest = session.query(Task).order_by(Task.id.desc()).first()
        assert newest is not None and newest.state == "completed"
        task_id = newest.id
    assert result.exit_code == 0, result.output
    assert "video: https://cdn.example/v" in result.output
    assert f"archived: {tmp_path / 'media' / f'{task_id}.mp4'}" in result.output
    assert "task " in result.output.splitlines()[0]  # plain lines when not a terminal

    out = tmp_path / "copy.mp4"
    result = runner.invoke(cli.main, ["download", str(task_id), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"video bytes"
    watched = runner.invoke(cli.main, ["watch", "--once"])
    assert watched.exit_code == 0 and "completed" in watched.output


def test_a_waiter_gives_back_its_admission_slot_while_it_sleeps(
    db: Database, make_settings: Any
) -> None:
    """With one slot (web/admission.py), a sleeping ?wait= must not turn others away (503)."""
    from tests.support.servers import serve
    from tracker.web import admission
    from tracker.web.app import create_app

    task = make_task(db, "queued", user_prompt="slot")
    server = serve(lambda url: admission.limit(create_app(make_settings(), db=db), 1))
    try:
        waiter = threading.Thread(
            target=requests.get, args=(f"{server.url}/api/tasks/{task.id}?wait=4",), daemon=True
        )
        waiter.start()
        time.sleep(0.5)  # the waiter is inside, asleep
        other = requests.get(f"{server.url}/api/tasks/{task.id}", timeout=10)
        assert other.status_code == 200
        waiter.join()
    finally:
        server.stop()
