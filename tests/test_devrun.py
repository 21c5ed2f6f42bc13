"""`make run`'s command, as a newcomer starts it: simulator, migrations, web and worker together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from tests.support.devrun import ROOT, dev_env, start_dev
from tests.support.servers import CLOSE
from tests.support.waiting import wait_for


@pytest.mark.slow  # starts a process
@pytest.mark.parametrize("flavor", ["proxy", "luma"])
def test_tracker_dev_runs_the_whole_loop(tmp_path: Path, flavor: str) -> None:
    # without a key, the simulator speaks this dialect
    env = dev_env(tmp_path, LUMA_API_FLAVOR=flavor)
    log = tmp_path / "dev.log"
    dev = start_dev(env, log)
    port = env["PORT"]
    base = f"http://127.0.0.1:{port}"
    try:

        def demo_tasks_done() -> list[dict]:  # type: ignore[type-arg]
            try:
                tasks = requests.get(f"{base}/api/tasks", timeout=2, headers=CLOSE).json()["tasks"]
            except (requests.ConnectionError, requests.Timeout):  # not up, or busy starting
                return []
            archived = [t for t in tasks if t["state"] == "completed" and t["media_url"]]
            return tasks if len(tasks) == 3 and len(archived) == 3 else []

        tasks = wait_for(demo_tasks_done, timeout=60, interval=0.5)
        video = requests.get(base + tasks[0]["media_url"], timeout=5, headers=CLOSE)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        page = requests.get(base + "/", timeout=5, headers=CLOSE)
        assert page.status_code == 200 and "lighthouse" in page.text.lower()
        assert {t["upstream"] for t in tasks} == {flavor}
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
    text = log.read_text()
    assert "No LUMA_API_KEY: using the simulated upstream" in text
    assert ("Luma's own API" in text) == (flavor == "luma")
    assert dev.returncode == 0, text[-3000:]


@pytest.mark.slow  # starts a process
def test_an_early_ctrl_c_stops_every_child_before_the_runner_exits(tmp_path: Path) -> None:
    """A Ctrl-C while the web process is still booting: the terminal sends SIGINT to the whole
    foreground group. Every child is gone when `tracker dev` returns, and nobody printed a
    traceback (the children once caught it mid-import and outlived the runner)."""
    log = tmp_path / "dev.log"
    dev = start_dev(dev_env(tmp_path), log, start_new_session=True)  # a terminal's own group
    try:
        wait_for(lambda: b"Booting worker" in log.read_bytes(), timeout=60, interval=0.05)
        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C does
        assert dev.wait(timeout=30) == 0, log.read_text()
        left = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(dev.pid)], capture_output=True)
        assert left.stdout.decode().strip() == "", left.stdout.decode()
    finally:
        with suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert "Dashboard:" not in text  # it stopped starting things once asked to stop


# -- where it listens: loopback only, unlike the Procfile's web process (issue 9, item 5) -----


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _serves(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_make_run_listens_on_loopback_only(tmp_path: Path) -> None:
    env = dev_env(tmp_path, SIMULATOR_DEMO="0", TRACKER_MEDIA_DIR="")
    port = int(env["PORT"])
    log = tmp_path / "dev.log"
    dev = start_dev(env, log)
    try:
        # served, not only accepted: gunicorn's master listens before its worker is booted
        wait_for(lambda: _serves(f"http://127.0.0.1:{port}/healthz"), timeout=60, interval=0.3)
        # all of 127.0.0.0/8 is this machine: a socket bound to 0.0.0.0 answers on .2 too
        assert not _answers("127.0.0.2", port), "the web process listens beyond 127.0.0.1"
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
    assert dev.returncode == 0, log.read_text()[-3000:]
    # the Procfile's web process keeps listening everywhere, as platforms need
    assert "0.0.0.0" in (ROOT / "gunicorn.conf.py").read_text()  # noqa: S104
    assert "--bind" not in (ROOT / "Procfile").read_text()


def test_host_overrides_the_dev_bind() -> None:
    from tracker.cli import dev as devrun

    assert devrun.web_command({"PORT": "8123"})[-2:] == ["--bind", "127.0.0.1:8123"]
    everywhere = devrun.web_command({"PORT": "8123", "HOST": "0.0.0.0"})  # noqa: S104
    assert everywhere[-1] == "0.0.0.0:8123"
    assert devrun.web_command({"PORT": "8123", "HOST": "::"})[-1] == "[::]:8123"
