"""What the web benchmarks share: the Procfile's web command, tasks to call back, a bare app.

`bare_app` is the floor: a Flask endpoint on the callback route that parses the JSON and
answers like the real route, with no database, run by the same gunicorn command.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from flask import Flask, request
from sqlalchemy import create_engine, delete, insert, update

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")

bare_app = Flask(__name__)


@bare_app.post("/callbacks/luma/<token>")
def bare_callback(token: str) -> tuple[dict[str, bool], int]:
    request.get_json(force=True, silent=True)
    return {"received": True, "understood": True}, 200


@bare_app.get("/healthz")
def bare_healthz() -> tuple[dict[str, str], int]:
    return {"status": "ok"}, 200


def procfile_web(app: str = "wsgi:app") -> list[str]:
    """The Procfile's web line (`gunicorn wsgi:app --config gunicorn.conf.py`), for `app`."""
    line = next(
        line.split(":", 1)[1].split()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    line[0] = GUNICORN
    return [app if part == "wsgi:app" else part for part in line]


def fill_tasks(url: str, count: int) -> list[tuple[str, str]]:
    """`count` processing tasks with callback tokens: [(token, upstream id)]."""
    from tracker.dbschema import upgrade
    from tracker.tasks.models import StateCount, Task, TaskEvent
    from tracker.tasks.store import hash_token

    upgrade(url)
    engine = create_engine(url)
    stamp = datetime.now(UTC)
    tokens = [(secrets.token_urlsafe(32), f"bench-{i:04d}") for i in range(count)]
    with engine.begin() as conn:
        conn.execute(delete(TaskEvent))
        conn.execute(delete(Task))
        conn.execute(update(StateCount).values(count=0))
        conn.execute(update(StateCount).where(StateCount.state == "processing").values(count=count))
        conn.execute(
            insert(Task),
            [
                {
                    "kind": "generate",
                    "state": "processing",
                    "user_prompt": f"bench task {i}",
                    "options": {},
                    "upstream_id": upstream_id,
                    "callback_token_hash": hash_token(token),
                    "created_at": stamp,
                    "updated_at": stamp,
                    "submitted_at": stamp - timedelta(minutes=1),
                    "last_news_at": stamp - timedelta(minutes=1),
                    "next_check_at": stamp + timedelta(hours=1),
                    "attempts": 1,
                    "quiet_polls": 0,
                    "archive_attempts": 0,
                }
                for i, (token, upstream_id) in enumerate(tokens)
            ],
        )
    engine.dispose()
    return tokens


class Web:
    """A gunicorn started with the Procfile's web line (plus `extra` options), until stop()."""

    def __init__(
        self,
        app: str,
        database_url: str,
        port: int,
        extra: list[str],
        settings: dict[str, str] | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
        env.update(
            PORT=str(port),
            DATABASE_URL=database_url,
            LUMA_API_BASE="http://127.0.0.1:9",
            PUBLIC_BASE_URL="",
            TRACKER_MEDIA_DIR="",
        )
        env.update(settings or {})  # a variant's own settings (TRACKER_METRICS=0, say)
        self.url = f"http://127.0.0.1:{port}"
        # a file, not a pipe: a full pipe would stall the server mid-benchmark
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [*procfile_web(app), *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(f"{self.url}/healthz", timeout=1)
                if answer.status_code == 200 and self._all_ready():
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start: {self.stop()[-2000:]}")
            time.sleep(0.2)

    def _all_ready(self) -> bool:
        """Every web process booted has loaded the app (gunicorn.conf.py, post_worker_init).

        Not only the first: wrk's connections are kept alive, and those opened while one
        process is still loading all go to the others for the whole run.
        """
        # pread: the server writes through the same file offset, which a seek would move
        log = os.pread(self.log.fileno(), 1 << 20, 0).decode(errors="replace")
        booted = log.count("Booting worker with pid")
        return booted > 0 and log.count("Worker ready (pid") == booted

    def cpu_seconds(self) -> float:
        """CPU time its worker processes used so far (user + system)."""
        total = 0.0
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in children.read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> str:
        """Stop it; its error log (gunicorn's own lines, warnings, tracebacks)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.errors()
        self.log.close()
        return text
