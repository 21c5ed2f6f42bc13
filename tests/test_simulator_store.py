"""The simulator's store (`--store PATH`), over real HTTP on 127.0.0.1, both voices: what one
simulator made is there for the next one started on the same file (issue 22, item 2).

Why: `make run` is restarted often and the tracker's database still holds the demo videos;
after a restart each must answer GET as before, stay extendable (upscalable), and stay its
own account's. Without a store nothing is kept, as before.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from lumasim.simulator import Simulator
from lumasim.store import StoreError
from tests.support.receiver import Receiver
from tests.support.servers import free_port
from tests.support.waiting import wait_for

KEY_A, KEY_B = "sim-key-alpha-0123456789", "sim-key-bravo-9876543210"
Make = Callable[..., Simulator]


@pytest.fixture(params=["proxy", "luma"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(flavor: str) -> Iterator[Make]:
    """Start a simulator of this flavor (keys A and B unless told); each is stopped at the end."""
    started: list[Simulator] = []

    def build(store: Path | None, **overrides: Any) -> Simulator:
        settings: dict[str, Any] = {
            "api_keys": [KEY_A, KEY_B],
            "flavor": flavor,
            "processing_after": 0.1,
            "complete_after": 1.0,
            "balances": {KEY_A: 1_000},
        }
        started.append(Simulator(store=store, **(settings | overrides)).start())
        return started[-1]

    yield build
    for simulator in started:
        simulator.stop()


def call(sim: Simulator, method: str, path: str, key: str, body: Any = None) -> requests.Response:
    prefix = "/luma" if sim.flavor == "proxy" else ""
    headers = {"Authorization": f"Bearer {key}"}
    return requests.request(
        method, f"{sim.url}{prefix}{path}", json=body, headers=headers, timeout=5
    )


def create(sim: Simulator, key: str = KEY_A, **extra: Any) -> str:
    prompt = "a heron at dawn"
    body = (
        {"user_prompt": prompt} if sim.flavor == "proxy" else {"prompt": prompt, "model": "ray-2"}
    )
    answer = call(sim, "POST", "/generations", key, body | extra)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def get(sim: Simulator, task_id: str, key: str = KEY_A) -> dict[str, Any]:
    answer = call(sim, "GET", f"/generations/{task_id}", key)
    assert answer.status_code == 200, answer.text
    got: dict[str, Any] = answer.json()
    return got


def completed(sim: Simulator, task_id: str) -> dict[str, Any]:
    return dict(wait_for(lambda: (got := get(sim, task_id))["state"] == "completed" and got))


def video_url(raw: dict[str, Any]) -> str:
    return str(raw["video"]["url"] if "video" in raw else raw["assets"]["video"])


def unlinked(raw: dict[str, Any]) -> dict[str, Any]:
    """The object without its links (they name the server, and expire from when asked)."""
    links = ("video", "video_raw", "thumbnail", "last_frame", "assets")
    return {name: value for name, value in raw.items() if name not in links}


def test_tasks_survive_a_restart(make: Make, tmp_path: Path) -> None:
    store = tmp_path / "simulator.db"
    first = make(store)
    done_id = create(first)
    done = completed(first, done_id)
    failed_id = create(first)
    first.set_state(failed_id, "failed", failure_reason="Out of memory")
    going_id = create(first)
    due = first.tasks[going_id].done_at
    balance = first.balance(KEY_A)
    first.stop()

    second = make(store)
    again = get(second, done_id)
    assert again["state"] == "completed" and again["created_at"] == done["created_at"]
    before, after = urlsplit(video_url(done)), urlsplit(video_url(again))
    assert after.path == before.path == f"/files/{done_id}.mp4"
    old_link = requests.get(f"{second.url}{before.path}?{before.query}", timeout=5)
    assert old_link.status_code == 200  # a link handed out before the restart still works
    assert unlinked(again) == unlinked(done)
    failure = get(second, failed_id)
    assert failure["state"] == "failed" and failure["failure_reason"] == "Out of memory"
    assert abs(second.tasks[going_id].done_at - due) < 0.05  # its clock went on, not restarted
    assert completed(second, going_id)["id"] == going_id
    assert list(second.tasks) == [done_id, failed_id, going_id]  # in the order they were made
    assert second.balance(KEY_A) == balance  # a kept balance wins over balances={A: 1000}


def test_a_video_made_before_a_restart_can_be_extended_or_upscaled(
    make: Make, tmp_path: Path
) -> None:
    store = tmp_path / "simulator.db"
    first = make(store)
    source = create(first)
    original = video_url(completed(first, source))
    first.stop()

    second = make(store)
    if second.flavor == "proxy":  # a new task from the old one
        path, body = f"/generations/{source}/extend", {"user_prompt": "and on"}
    else:  # the old one rerun, under its own id, with a new video
        path, body = f"/generations/{source}/upscale", {"resolution": "4k"}
    answer = call(second, "POST", path, KEY_A, body)
    assert answer.status_code == 201, answer.text
    made = str(answer.json()["id"])
    remade = completed(second, made)
    assert video_url(remade) != original
    if second.flavor == "proxy":
        assert made != source and second.tasks[made].source_id == source
    else:
        assert made == source and remade["request"]["generation_type"] == "upscale_video"
        assert urlsplit(video_url(remade)).path == f"/files/{source}.r1.mp4"
    second.stop()

    third = make(store)  # what the second one made (or remade) is kept as well
    kept = get(third, made)
    assert kept["state"] == "completed" and unlinked(kept) == unlinked(remade)
    assert urlsplit(video_url(kept)).path == urlsplit(video_url(remade)).path


def test_ids_stay_their_own_accounts_after_a_restart(make: Make, tmp_path: Path) -> None:
    store = tmp_path / "simulator.db"
    first = make(store)
    task_id = create(first, KEY_A)
    completed(first, task_id)
    first.stop()
    for path in tmp_path.iterdir():  # the keys themselves are never written
        assert KEY_A.encode() not in path.read_bytes(), path.name

    second = make(store)
    assert call(second, "GET", f"/generations/{task_id}", KEY_B).status_code == 404
    assert get(second, task_id, KEY_A)["state"] == "completed"
    second.stop()

    only_b = make(store, api_keys=[KEY_B], balances=None)  # A not given: its tasks are nobody's
    assert call(only_b, "GET", f"/generations/{task_id}", KEY_B).status_code == 404
    only_b.stop()
    assert get(make(store), task_id, KEY_A)["state"] == "completed"  # A again: A's again


def test_a_callback_due_while_it_was_down_is_sent_after_the_restart(
    make: Make, tmp_path: Path, receiver: Receiver
) -> None:
    store = tmp_path / "simulator.db"
    first = make(store, complete_after=0.8)
    hook = f"{receiver.url}/callbacks/one"
    field = "notify_hook" if first.flavor == "proxy" else "callback_url"  # each voice's word
    task_id = create(first, **{field: hook})
    wait_for(lambda: len(receiver.got) == 1)  # processing (dreaming), then it stops
    first.stop()
    second = make(store)
    done = wait_for(lambda: [b for _, b in receiver.got if b["state"] == "completed"])
    assert [b["id"] for b in done] == [task_id]
    assert urlsplit(video_url(done[0])).netloc == urlsplit(second.url or "").netloc
    assert len(receiver.got) == 2  # the one sent before the restart is not sent again


def test_without_a_store_nothing_is_kept(
    make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = make(None)
    task_id = create(first)
    first.stop()
    assert list(tmp_path.iterdir()) == []
    second = make(None)
    assert call(second, "GET", f"/generations/{task_id}", KEY_A).status_code == 404


def test_a_store_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database at all, " * 100)
    other = tmp_path / "tracker.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY)")
    conn.close()
    for path, words in (
        (corrupt, "not a database"),
        (other, "another SQLite database"),
        (tmp_path / "missing" / "deeper" / "s.db", "No such file"),
    ):
        with pytest.raises(StoreError) as caught:
            Simulator(store=path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and words in message, message
    with sqlite3.connect(other) as conn:  # a database not ours is left as it was
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master")] == ["tasks"]
    conn.close()


def test_the_other_flavors_tasks_are_kept_aside(tmp_path: Path) -> None:
    """LUMA_API_FLAVOR changed between two `make run`s: each API serves its own tasks only."""
    store = tmp_path / "simulator.db"

    def started(flavor: str) -> Simulator:
        return Simulator(flavor=flavor, store=store, processing_after=0, complete_after=0).start()

    proxy = started("proxy")
    made = create(proxy, "")
    proxy.stop()
    luma = started("luma")
    assert not luma.tasks and luma.set_aside == 1
    assert requests.get(f"{luma.url}/generations/{made}", timeout=5).status_code == 404
    luma.stop()
    proxy = started("proxy")
    assert list(proxy.tasks) == [made] and proxy.set_aside == 0
    proxy.stop()


def _serve(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start it; its first line says it listens, its second what its store held."""
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = [child.stderr.readline() if child.stderr else "" for _ in range(2)]
    assert "listening on" in lines[0], lines
    return child, lines[1]


def _stop(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=10) == 0


@pytest.mark.slow  # starts processes
def test_python_m_lumasim_and_tracker_simulate_take_store(tmp_path: Path) -> None:
    store, port = tmp_path / "simulator.db", free_port()
    base = f"http://127.0.0.1:{port}/luma/generations"
    tracker = str(Path(sys.executable).parent / "tracker")
    child, kept = _serve(
        [sys.executable, "-m", "lumasim", "--store", str(store), "--port", str(port)]
    )
    try:
        assert f"keeping its tasks in {store} (0 from before)" in kept
        made = requests.post(base, json={"user_prompt": "a kite in the wind"}, timeout=5).json()
        _stop(child)
        child, kept = _serve([tracker, "simulate", "--store", str(store), "--port", str(port)])
        assert f"keeping its tasks in {store} (1 from before)" in kept
        assert requests.get(f"{base}/{made['id']}", timeout=5).json()["id"] == made["id"]
        _stop(child)
    finally:
        if child.poll() is None:
            child.kill()
    store.write_bytes(b"garbage " * 512)
    for start in ([sys.executable, "-m", "lumasim"], [tracker, "simulate"]):
        bad = subprocess.run(
            [*start, "--store", str(store), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode == 1, bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot use" in lines[0] and str(store) in lines[0], lines
