"""GET /metrics (issue 12, item 1): what a scrape shows, who may scrape, and the folder's upkeep.

In-process tests run the app in a real server thread (conftest `live`); the process tests
(marked slow) run the Procfile's gunicorn line and a `tracker worker` sharing one folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.factory import make_task
from tests.support.servers import free_port
from tests.support.waiting import wait_for
from tracker import metrics_files
from tracker.db import Database
from tracker.tasks import store
from tracker.tasks.models import Task, WorkerBeat, utcnow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "metrics-test-admin-token-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def scrape(url: str, **headers: str) -> str:
    response = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def test_a_scrape_counts_callbacks_by_result_and_times_requests_by_route(
    live: Any, db: Database
) -> None:
    server = live()
    token = "a-callback-token-that-must-never-show-in-metrics-000"
    make_task(
        db,
        "processing",
        user_prompt="p",
        upstream_id="up-1",
        callback_token_hash=store.hash_token(token),
    )
    before = scrape(server.url)
    post = f"{server.url}/callbacks/luma/{token}"
    assert (
        requests.post(post, json={"id": "up-1", "state": "processing"}, timeout=10).status_code
        == 200
    )
    assert requests.post(post, json={"what": "nobody knows"}, timeout=10).status_code == 200
    assert (
        requests.post(f"{server.url}/callbacks/luma/nope", json={}, timeout=10).status_code == 404
    )
    after = scrape(server.url)

    def grew(result: str) -> float:
        name = "tracker_callbacks_total"
        return value(after, name, result=result) - value(before, name, result=result)

    assert grew("understood") == 1
    assert grew("not_understood") == 1
    assert grew("unknown_token") == 1
    route = "/callbacks/luma/<token>"
    count = "tracker_http_request_seconds_count"
    assert value(after, count, method="POST", route=route, status="200") >= 2
    assert token not in after and "/callbacks/luma/nope" not in after
    make_task(db, "queued", user_prompt="waits")
    assert value(scrape(server.url), "tracker_tasks", state="queued") == 1  # the counters
    assert "tracker_upstream_request_seconds" in after  # the histogram is declared


def test_requests_the_admission_gate_turns_away_are_counted_as_503s(
    db: Database, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every slot taken (web/admission.py), a callback and a page get 503 before any
    route runs; a scrape still shows them, the callback under its route's template."""
    from tests.support.servers import serve
    from tracker.web import admission
    from tracker.web.app import create_app

    monkeypatch.setattr(admission, "QUEUE_WAIT", 0.2)
    inside, release = threading.Event(), threading.Event()

    def holding(app: Any) -> Any:  # a request to /hold keeps the one slot until released
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if environ["PATH_INFO"] == "/hold":
                inside.set()
                release.wait(10)
            return app(environ, start_response)

        return wsgi

    server = serve(lambda url: admission.limit(holding(create_app(make_settings(), db=db)), 1))
    holder = threading.Thread(target=requests.get, args=(f"{server.url}/hold",), daemon=True)
    try:
        before = scrape(server.url)
        holder.start()
        assert inside.wait(10)
        token = "a-callback-token-that-must-never-show-in-metrics-111"
        busy = requests.post(f"{server.url}/callbacks/luma/{token}", json={}, timeout=10)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert requests.get(f"{server.url}/api/tasks", timeout=10).status_code == 503
        release.set()
        holder.join(10)
        after = scrape(server.url)
    finally:
        release.set()
        server.stop()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    count = "tracker_http_request_seconds_count"
    assert grew(count, method="POST", route="/callbacks/luma/<token>", status="503") == 1
    assert grew(count, method="GET", route="<busy>", status="503") == 1
    assert grew("tracker_callbacks_total", result="error") == 1
    assert token not in after


def test_submits_and_upstream_requests_are_counted(live: Any, upstream: Any, db: Database) -> None:
    server = live(luma_api_base=upstream.url)
    before = scrape(server.url)
    answer = requests.post(f"{server.url}/api/tasks", json={"user_prompt": "a boat"}, timeout=10)
    assert answer.status_code == 201, answer.text
    after = scrape(server.url)
    mine = {"account": "default"}  # by the account that sent it
    accepted = value(after, "tracker_submits_total", outcome="accepted", **mine)
    assert accepted - value(before, "tracker_submits_total", outcome="accepted", **mine) == 1
    sent = value(after, "tracker_upstream_requests_total", kind="create", code="200", **mine)
    was = value(before, "tracker_upstream_requests_total", kind="create", code="200", **mine)
    assert sent - was == 1
    timed = "tracker_upstream_request_seconds_count"
    assert (
        value(after, timed, kind="create", **mine) - value(before, timed, kind="create", **mine)
        == 1
    )
    assert "tracker_account_disabled_total" in after


def test_poll_lag_is_how_overdue_the_most_overdue_task_is(live: Any, db: Database) -> None:
    server = live()
    task = make_task(db, "queued", user_prompt="late")
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        row.state, row.upstream_id = "pending", "up-late"
        row.next_check_at = utcnow() - timedelta(seconds=300)
    lag = value(scrape(server.url), "tracker_poll_lag_seconds")
    assert 300 <= lag < 400


def test_workers_are_counted_live_and_stale(live: Any, db: Database) -> None:
    server = live()
    now = utcnow()
    with db.write() as session:
        for name, seen in (("a", now), ("b", now - timedelta(seconds=120))):
            session.add(WorkerBeat(id=name, host="h", pid=1, started_at=seen, last_seen_at=seen))
    text = scrape(server.url)
    assert value(text, "tracker_workers", state="live") == 1
    assert value(text, "tracker_workers", state="stale") == 1


def test_with_an_api_token_a_scrape_needs_the_bearer_token(live: Any) -> None:
    server = live(api_token=TOKEN)
    refused = requests.get(f"{server.url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "tracker_tasks" in scrape(server.url, Authorization=f"Bearer {TOKEN}")


def test_tracker_metrics_0_turns_the_route_off(live: Any) -> None:
    server = live(metrics=False)
    assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 404


def test_settings_read_tracker_metrics_and_the_folder(tmp_path: Path) -> None:
    from tracker import settings

    loaded = settings.load({}, instance=tmp_path)
    assert loaded.metrics is True and loaded.metrics_dir == str(tmp_path / "metrics")
    off = settings.load({"TRACKER_METRICS": "0", "PROMETHEUS_MULTIPROC_DIR": "/x"})
    assert off.metrics is False and off.metrics_dir == "/x"
    with pytest.raises(settings.SettingsError, match="TRACKER_METRICS"):
        settings.load({"TRACKER_METRICS": "maybe"})


# -- the folder -------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow  # starts a short-lived process to have a pid that is gone
def test_a_starting_process_removes_only_the_files_of_processes_that_are_gone(
    tmp_path: Path,
) -> None:
    dead, alive = _dead_pid(), os.getppid()
    names = [
        f"{kind}_{pid}.db"
        for kind in ("counter", "histogram", "gauge_livesum")
        for pid in (dead, alive)
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    removed = metrics_files.prune_dead(str(tmp_path))
    assert sorted(removed) == sorted(n for n in names if f"_{dead}." in n)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n in names if f"_{alive}." in n
    )


def test_mark_dead_removes_live_gauges_only(tmp_path: Path) -> None:
    for name in ("gauge_livesum_77.db", "gauge_liveall_77.db", "counter_77.db", "gauge_all_77.db"):
        (tmp_path / name).write_bytes(b"")
    metrics_files.mark_dead(77, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_77.db", "gauge_all_77.db"]


# -- processes --------------------------------------------------------------------------------


def _env(db: Database, folder: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    env.pop("PUBLIC_BASE_URL", None)
    env.update(
        DATABASE_URL=db.url,
        PORT=str(port),
        LUMA_API_BASE="http://127.0.0.1:9",
        TRACKER_MEDIA_DIR="",
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        WEB_CONCURRENCY="2",
        **extra,
    )
    return env


def _gunicorn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "gunicorn"), "wsgi:app", "--config", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_one_scrape_sees_every_web_process_and_the_worker_and_a_dead_one_is_marked(
    db: Database, tmp_path: Path
) -> None:
    folder = tmp_path / "metrics"
    stale = _dead_pid()
    folder.mkdir()
    (folder / f"counter_{stale}.db").write_bytes(b"")  # a process gone since the last run
    port = free_port()  # not a fixed one: another test run may be using it
    url = f"http://127.0.0.1:{port}"
    web = _gunicorn(_env(db, folder, port), tmp_path / "web.log")
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "tracker"), "worker"], env=_env(db, folder, port), stdout=out, stderr=out
        )
    try:
        wait_for(lambda: _up(url), timeout=30)
        assert not (folder / f"counter_{stale}.db").exists(), "the master pruned it"

        def processes() -> tuple[float, float]:
            text = scrape(url)
            return (
                value(text, "tracker_processes", kind="web"),
                value(text, "tracker_processes", kind="worker"),
            )

        wait_for(lambda: processes() == (2, 1), timeout=30)
        children = _children(web.pid)
        os.kill(children[0], signal.SIGKILL)  # gunicorn starts another; child_exit marks it
        wait_for(lambda: _children(web.pid) and children[0] not in _children(web.pid), timeout=30)
        wait_for(lambda: _up(url), timeout=30)
        wait_for(lambda: processes() == (2, 1), timeout=30)
        assert not list(folder.glob(f"gauge_live*_{children[0]}.db"))
    finally:
        worker.send_signal(signal.SIGTERM)
        web.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        web.wait(timeout=60)
    log = (tmp_path / "web.log").read_text()
    assert "Traceback" not in log and "MonkeyPatchWarning" not in log, log[-3000:]
