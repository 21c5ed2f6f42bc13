"""Two machines (issue 12, item 6): two complete trackers — web and worker each, their own
instance folders — on one PostgreSQL and one bucket. Tasks submitted to either are followed,
archived and served by both; a third worker started later takes a share.

Everything runs as real processes (the Procfile's gunicorn line and `tracker worker`, each
started from its machine's own folder) against the simulated upstream, moto's S3 server
and a PostgreSQL database of the test's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tests.support.blankdb import blank_database
from tests.support.databases import TEST_DATABASE_URL
from tests.support.s3server import S3Server
from tests.support.servers import CLOSE, free_port
from tests.support.waiting import wait_for
from tracker.dbschema import upgrade

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "sk-two-machines-upstream-key-0123456789"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not TEST_DATABASE_URL,
        reason="several machines share a PostgreSQL: set TEST_DATABASE_URL (CI does)",
    ),
]


class Machine:
    """One machine's folder and processes: its web (gunicorn) and its workers."""

    def __init__(self, name: str, folder: Path, port: int, env: dict[str, str]) -> None:
        self.name, self.folder, self.port = name, folder, port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**env, "PORT": str(port), "PUBLIC_BASE_URL": self.url}
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        folder.mkdir()

    def _start(self, args: list[str], log: str) -> Path:
        path = self.folder / log
        with path.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append((proc, path))
        return path

    def web(self) -> Machine:
        gunicorn = [str(BIN / "gunicorn"), "wsgi:app", "--config", str(ROOT / "gunicorn.conf.py")]
        self._start([*gunicorn, "--pythonpath", str(ROOT)], "web.log")
        wait_for(self.up, timeout=60, interval=0.2)
        return self

    def worker(self) -> Path:
        return self._start([str(BIN / "tracker"), "worker"], f"worker{len(self.procs)}.log")

    def up(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=2, headers=CLOSE).status_code == 200
        except requests.RequestException:
            return False

    def submit(self, prompt: str) -> int:
        answer = requests.post(
            f"{self.url}/api/tasks", json={"user_prompt": prompt}, timeout=30, headers=CLOSE
        )
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def task(self, task_id: int) -> dict[str, Any]:
        return requests.get(f"{self.url}/api/tasks/{task_id}", timeout=10, headers=CLOSE).json()

    def video(self, task_id: int) -> bytes:
        answer = requests.get(f"{self.url}/media/{task_id}/video", timeout=30, headers=CLOSE)
        assert answer.status_code == 200, (self.name, task_id, answer.status_code)
        return answer.content

    def stop_one(self, log: Path) -> None:
        """SIGTERM the process writing `log` and check it stopped cleanly."""
        proc = next(proc for proc, path in self.procs if path == log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]

    def stop(self) -> None:
        """SIGTERM every process, then check each stopped cleanly; none is left running."""
        for proc, _log in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        failures: list[str] = []
        for proc, path in self.procs:
            try:
                if proc.wait(timeout=60) != 0:
                    failures.append(path.read_text()[-3000:])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                failures.append(f"{path.name}: still running 60 s after SIGTERM")
        assert failures == [], "\n".join(failures)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[dict[str, str]]:
    """One PostgreSQL database, one bucket, one upstream, one secret key: what machines share."""
    s3 = S3Server()
    sim = Simulator(api_key=KEY, processing_after=0.2, complete_after=0.6).start()
    try:
        with blank_database("postgresql", tmp_path) as url:
            upgrade(url)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each machine: its own instance/metrics
            env.update(s3.new_bucket().env())
            env.update(
                DATABASE_URL=url,
                LUMA_API_BASE=sim.url or "",
                LUMA_API_KEY=KEY,
                TRACKER_SECRET_KEY="a-secret-key-every-machine-shares-0123",
                TRACKER_MEDIA_PROXY="1",  # each web streams the bucket's copy itself
                TRACKER_MEDIA_ALLOW_PRIVATE="1",  # the simulator's videos are on 127.0.0.1
                TRACKER_MAX_IN_FLIGHT="1",  # queued tasks wait for the workers: a share each
                TRACKER_WORKER_INTERVAL="0.2",
                TRACKER_POLL_AFTER="2",
                WEB_CONCURRENCY="1",
            )
            yield env
    finally:
        sim.stop()
        s3.stop()


def settled(machine: Machine, ids: list[int]) -> bool:
    tasks = [machine.task(task_id) for task_id in ids]
    return all(t["state"] == "completed" and t["media_url"] for t in tasks)


def test_two_trackers_share_one_database_and_one_bucket(
    shared: dict[str, str], tmp_path: Path
) -> None:
    a = Machine("a", tmp_path / "a", free_port(), shared)
    b = Machine("b", tmp_path / "b", free_port(), shared)
    try:
        first_a = a.web().worker()
        first_b = b.web().worker()
        ids = [a.submit(f"from a {n}") for n in range(3)] + [
            b.submit(f"from b {n}") for n in range(3)
        ]
        wait_for(lambda: settled(a, ids), timeout=120, interval=0.5)
        for task_id in ids:
            assert a.task(task_id) == b.task(task_id), "one database"
            video = a.video(task_id)
            assert video and b.video(task_id) == video, "one bucket, served by both"
        for machine in (a, b):
            assert (machine.folder / "instance" / "metrics").is_dir(), "its own instance folder"

        third = a.worker()  # a worker started later, on machine a
        wait_for(lambda: "sends queued tasks" in third.read_text(), timeout=60, interval=0.2)
        # The account's one slot is counted in the database, so with the first workers still
        # running the newcomer could lose every race for it; once they stop, the work is its.
        a.stop_one(first_a)
        b.stop_one(first_b)
        more = [(a if n % 2 else b).submit(f"later {n}") for n in range(9)]
        wait_for(lambda: settled(b, more), timeout=180, interval=0.5)
        log = third.read_text()
        assert "pass: " in log or "archived task" in log, "the third worker took a share"
        assert KEY not in log
    finally:
        try:
            a.stop()
        finally:
            b.stop()  # even when a's processes did not stop cleanly: none is left behind
