"""Every user error of the `tracker` command is one line and a failing exit code, never a
traceback (issue 22, item 3): a bad choice lists the choices, a missing task says so, a
database that cannot be used names DATABASE_URL and what was wrong, and a SQLite file in a
folder that does not exist is refused by every process, the folder left uncreated.

Each case is a real `tracker` process (as a person types it) with an environment of its own,
started in a folder of the test's (outside the checkout, so no `make run` of the checkout is
read).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import TEST_DATABASE_URL
from tests.support.devrun import ROOT, TRACKER
from tests.support.servers import free_port
from tracker.db import Database

pytestmark = pytest.mark.slow  # every test here starts processes

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"  # nothing listens on port 1


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`tracker ARGS` in `cwd` with only PATH, HOME and `env` (a person's fresh shell)."""
    given = {"PATH": os.environ["PATH"], "HOME": str(cwd), "TRACKER_DEV_ENV": "0", **env}
    return subprocess.run(
        [str(TRACKER), *args],
        cwd=cwd,
        env=given,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line that says what was wrong: no traceback, a failing exit code, and every one
    of `words` in a line of stderr (which is returned)."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, shown
    assert result.returncode != 0, shown
    lines = [line for line in result.stderr.splitlines() if all(w in line for w in words)]
    assert lines, f"no line with {words}:\n{shown}"
    return lines[0]


def missing_database_url() -> str:
    """A database that does not exist, on a PostgreSQL that runs (the CI's, or this machine's)."""
    server = (TEST_DATABASE_URL or "postgresql://postgres@127.0.0.1:5432/postgres").rsplit("/", 1)
    try:
        psycopg.connect(server[0].replace("+psycopg", "") + "/postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL to ask for a missing database: {exc}")
    return server[0] + "/does_not_exist"


# -- bad input to a command ---------------------------------------------------------------------


def test_a_bad_state_lists_the_choices(tmp_path: Path, db: Database) -> None:
    line = error_line(run(tmp_path, "list", "--state", "bogus", DATABASE_URL=db.url), "--state")
    assert "'bogus' is not one of" in line
    for state in ("queued", "pending", "completed", "rejected", "timed_out"):
        assert state in line


@pytest.mark.parametrize("command", ["show", "resend", "poll", "download"])
def test_a_task_that_is_not_there_is_named(tmp_path: Path, db: Database, command: str) -> None:
    line = error_line(run(tmp_path, command, "999", DATABASE_URL=db.url), "999")
    assert line == "Error: no task 999"


def test_a_database_without_tables_says_to_migrate(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    line = error_line(run(tmp_path, "list", DATABASE_URL=empty), "DATABASE_URL")
    assert "no tables yet" in line and "tracker db upgrade" in line


# -- a database that cannot be used: the task commands, `tracker db upgrade` and `make run` ------


@pytest.mark.parametrize("args", [["list"], ["show", "1"], ["db", "upgrade"]])
def test_an_unreachable_postgresql_names_database_url(tmp_path: Path, args: list[str]) -> None:
    line = error_line(run(tmp_path, *args, DATABASE_URL=UNREACHABLE), "DATABASE_URL")
    assert "postgresql://postgres@127.0.0.1:1/x" in line and "refused" in line.lower()


@pytest.mark.parametrize("args", [["list"], ["submit", "--prompt", "a kite"], ["db", "upgrade"]])
def test_a_missing_postgresql_database_names_database_url(tmp_path: Path, args: list[str]) -> None:
    url = missing_database_url()
    line = error_line(run(tmp_path, *args, DATABASE_URL=url), "DATABASE_URL")
    assert 'database "does_not_exist" does not exist' in line


def test_a_password_in_database_url_is_not_shown(tmp_path: Path) -> None:
    url = "postgresql://postgres:hunter2-secret@127.0.0.1:1/x"
    result = run(tmp_path, "list", DATABASE_URL=url)
    error_line(result, "DATABASE_URL", "127.0.0.1:1/x")
    assert "hunter2-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize("url", [UNREACHABLE, "missing"])
def test_make_run_stops_on_a_database_it_cannot_use(tmp_path: Path, url: str) -> None:
    url = missing_database_url() if url == "missing" else url
    ports = {"PORT": str(free_port()), "SIMULATOR_PORT": str(free_port())}
    result = run(tmp_path, "dev", DATABASE_URL=url, **ports)
    line = error_line(result, "DATABASE_URL")
    assert url.split("@")[1] in line
    assert "Dashboard:" not in result.stderr  # nothing was left running


# -- a SQLite file in a folder that does not exist: refused by every process, nothing made ------


@pytest.mark.parametrize(
    "args", [["list"], ["submit", "--prompt", "a kite"], ["db", "upgrade"], ["worker"], ["dev"]]
)
def test_a_sqlite_file_in_a_missing_folder_is_refused(tmp_path: Path, args: list[str]) -> None:
    folder = tmp_path / "no" / "such" / "dir"
    ports = {"PORT": str(free_port()), "SIMULATOR_PORT": str(free_port())}
    result = run(tmp_path, *args, DATABASE_URL=f"sqlite:///{folder / 'x.db'}", **ports)
    line = error_line(result, "DATABASE_URL")
    assert f"{folder}, which does not exist" in line
    assert not (tmp_path / "no").exists()


def test_the_web_process_refuses_a_sqlite_file_in_a_missing_folder(tmp_path: Path) -> None:
    """gunicorn's worker imports wsgi.py, which stops with one line (exit 3: "failed to boot")."""
    folder = tmp_path / "no" / "such" / "dir"
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": f"sqlite:///{folder / 'x.db'}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert f"DATABASE_URL names a SQLite file in {folder}" in error_line(result, "DATABASE_URL")
    assert not (tmp_path / "no").exists()
