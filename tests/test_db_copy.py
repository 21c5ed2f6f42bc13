"""`tracker db copy --to ...`: SQLite's tasks, events and counters into a new database
(PostgreSQL when TEST_DATABASE_URL is set), checked by counts, by the API and by a new task.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from tests.support.blankdb import blank_database
from tests.support.databases import BACKENDS
from tests.support.servers import LiveServer, serve
from tests.support.waiting import wait_for
from tracker.cli import main
from tracker.db import Database
from tracker.dbschema import upgrade
from tracker.settings import Settings
from tracker.tasks.models import StateCount, Task, TaskEvent
from tracker.web.app import create_app

TRACKER = Path(sys.executable).parent / "tracker"


def tracker_app(url: str, sim: Any, media_dir: Path) -> tuple[Database, LiveServer]:
    database = Database(url)

    def factory(base: str) -> Any:
        settings = Settings(
            database_url=url,
            luma_api_base=sim.url,
            public_base_url=base,
            media_dir=str(media_dir),
            media_allow_private=True,
        )
        return create_app(settings, db=database)

    return database, serve(factory)


@pytest.fixture
def source(sim: Any, tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A SQLite database that has seen real work: three tasks completed by callbacks, one queued."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    database, app = tracker_app(url, sim, tmp_path / "media")
    try:
        ids = []
        for prompt in ("a heron takes off", "rain on a tin roof", "a lantern in the fog"):
            answer = requests.post(f"{app.url}/api/tasks", json={"user_prompt": prompt}, timeout=5)
            assert answer.status_code == 201
            ids.append(answer.json()["id"])
        for task_id in ids:
            wait_for(lambda t=task_id: api(app, t)["state"] == "completed")
        tasks = [api(app, task_id) for task_id in ids]
    finally:
        app.stop()
        database.dispose()
    yield url, tasks


def api(app: LiveServer, task_id: int) -> dict[str, Any]:
    answer = requests.get(f"{app.url}/api/tasks/{task_id}", timeout=5)
    answer.raise_for_status()
    return answer.json()


def counts(url: str) -> dict[str, Any]:
    database = Database(url)
    try:
        with database.read() as session:
            return {
                "tasks": session.scalar(select(func.count()).select_from(Task)),
                "events": session.scalar(select(func.count()).select_from(TaskEvent)),
                "counters": dict(session.execute(select(StateCount.state, StateCount.count)).all()),
            }
    finally:
        database.dispose()


def copy_cli(source_url: str, target: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRACKER_"))}
    env.update(DATABASE_URL=source_url, TRACKER_MEDIA_DIR=str(tmp_path / "media"))
    return subprocess.run(
        [str(TRACKER), "db", "copy", "--to", target],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # starts a process
@pytest.mark.parametrize("kind", BACKENDS)
def test_copy_moves_every_row_and_says_what_to_change(
    kind: str, source: tuple[str, list[dict[str, Any]]], sim: Any, tmp_path: Path
) -> None:
    source_url, tasks = source
    before = counts(source_url)
    assert before["tasks"] == 3 and before["events"] >= 6
    assert before["counters"]["completed"] == 3

    with blank_database(kind, tmp_path) as target_url:
        # the form a user types: postgresql://, not SQLAlchemy's driver name
        typed = target_url.replace("postgresql+psycopg://", "postgresql://")
        done = copy_cli(source_url, typed, tmp_path)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "migrated " in out  # the new database was empty: migrated first
        assert "tasks: 3 rows" in out
        assert f"task_events: {before['events']} rows" in out
        assert "the counts match" in out
        assert "set DATABASE_URL=" in out and str(tmp_path / "media") in out
        assert "TRACKER_MEDIA_URL=s3://" in out

        assert counts(target_url) == before
        database, app = tracker_app(target_url, sim, tmp_path / "media")
        try:
            for task in tasks:  # the API answers the same on the new database
                assert api(app, task["id"]) == task
            # new tasks take new ids (PostgreSQL's sequences moved past the copied ones)
            answer = requests.post(
                f"{app.url}/api/tasks", json={"user_prompt": "after the move"}, timeout=5
            )
            assert answer.status_code == 201 and answer.json()["id"] == 4
        finally:
            app.stop()
            database.dispose()

        # a database that holds tasks is never written into
        again = copy_cli(source_url, typed, tmp_path)
        assert again.returncode == 1
        assert "is not empty (" in again.stderr and "4 rows in tasks, " in again.stderr
        assert "copy only into a new, empty database" in again.stderr
        assert counts(target_url)["tasks"] == 4


def test_copy_refuses_its_own_database_and_a_bad_url(
    source: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    source_url, _tasks = source
    runner = CliRunner()
    env = {"DATABASE_URL": source_url, "TRACKER_MEDIA_DIR": str(tmp_path / "media")}
    same = runner.invoke(main, ["db", "copy", "--to", source_url], env=env)
    assert same.exit_code == 1 and "--to names the database being copied" in same.output
    bad = runner.invoke(main, ["db", "copy", "--to", "mysql://db/tracker"], env=env)
    assert bad.exit_code == 1
    assert "--to must be a sqlite:// or postgresql:// URL" in bad.output
    assert counts(source_url)["tasks"] == 3
