"""`make run` and the CLI in a second shell share one world (issue 22, item 1).

`tracker dev` writes instance/dev.env (its pid and only the values it chose itself: the
simulator's address and dialect, the callbacks' base URL, private media links allowed), and
deletes it when it stops. The task commands started in the checkout read it below their own
environment while that pid lives, and say so in one line on stderr; `worker` and `db` never
read it, and TRACKER_DEV_ENV=0 turns it off. Outside a checkout, a task command with no
DATABASE_URL says how to point it at one rather than making a database there.

`tracker dev` runs here in a private checkout of the test's (this project's pyproject.toml,
its code linked in), never in the real one: its instance/ (dev.env, the database, the
simulator's store) is the test's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from tests.support import devrun
from tests.support.devrun import ROOT, TRACKER
from tests.support.servers import CLOSE, free_port
from tests.support.waiting import wait_for
from tracker.cli.dev import checkout, database_tag, read_dev_env
from tracker.db import Database

TOKEN = "tok-dev-env-0123456789abcdef"  # a secret in `make run`'s environment
USING = "using the settings of `make run`"


@pytest.fixture
def private_checkout(tmp_path: Path) -> Path:
    """A checkout of this project (devrun.private_checkout), with a folder inside it."""
    root = devrun.private_checkout(tmp_path / "checkout")
    (root / "docs").mkdir()  # a folder inside it: still the checkout
    return root


def shell(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`tracker ARGS` in a fresh shell (PATH and HOME only, and `env`) started in `cwd`."""
    given = {"PATH": os.environ["PATH"], "HOME": str(cwd), **env}
    return subprocess.run(
        [str(TRACKER), *args], cwd=cwd, env=given, capture_output=True, text=True, timeout=180
    )


def dev_env_file(root: Path, pid: int, **values: str) -> Path:
    path = root / "instance" / "dev.env"
    path.parent.mkdir(exist_ok=True)
    lines = [f"pid={pid}", *(f"{name}={value}" for name, value in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that lives through the test (as `make run` would)."""
    process = subprocess.Popen(["sleep", "300"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# -- the checkout ---------------------------------------------------------------------------


def test_a_checkout_is_the_nearest_folder_with_this_projects_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "luma-tracker"\n')
    inner = tmp_path / "vendor" / "other"
    inner.mkdir(parents=True)
    (inner / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    (tmp_path / "vendor" / "pyproject.toml").write_text("not [toml")
    assert checkout(inner / ".") == tmp_path
    assert checkout(tmp_path) == tmp_path
    assert checkout(ROOT / "tracker" / "cli") == ROOT
    assert checkout(Path("/")) is None


@pytest.mark.slow  # starts processes (whose pids it names)
def test_dev_env_is_read_only_while_its_pid_lives(tmp_path: Path, live_pid: int) -> None:
    path = dev_env_file(tmp_path, live_pid, LUMA_API_BASE="http://127.0.0.1:9", LUMA_API_KEY="k")
    # never a key, even one written there
    assert read_dev_env(path) == (live_pid, {"LUMA_API_BASE": "http://127.0.0.1:9"}, "")
    dev_env_file(tmp_path, dead_pid(), LUMA_API_BASE="http://127.0.0.1:9")
    assert read_dev_env(path) is None
    for pid in ("0", "-1", "", "x"):
        path.write_text(f"pid={pid}\nLUMA_API_BASE=http://127.0.0.1:9\n")
        assert read_dev_env(path) is None
    assert read_dev_env(tmp_path / "nothing.env") is None


# -- the task commands read it; nothing else does ----------------------------------------------


@pytest.mark.slow  # starts processes
def test_task_commands_read_it_below_their_environment_while_its_pid_lives(
    private_checkout: Path, db: Database, live_pid: int
) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    tag = database_tag(db.url)  # `make run` on this database
    dev_env_file(private_checkout, live_pid, database=tag, LUMA_API_BASE=base, PUBLIC_BASE_URL=base)
    here = private_checkout / "docs"  # a folder inside the checkout

    read = shell(here, "list", DATABASE_URL=db.url, PUBLIC_BASE_URL="http://127.0.0.1:8")
    assert read.returncode == 0, read.stderr
    (line,) = [line for line in read.stderr.splitlines() if USING in line]
    where = private_checkout / "instance" / "dev.env"
    # the variable set here wins: only LUMA_API_BASE is taken
    assert line == f"{USING} (pid {live_pid}) from {where}: LUMA_API_BASE" + (
        " (TRACKER_DEV_ENV=0 ignores it)"
    )

    off = shell(here, "list", DATABASE_URL=db.url, TRACKER_DEV_ENV="0")
    assert off.returncode == 0 and USING not in off.stderr, off.stderr

    # not a task command: never read
    upgraded = shell(here, "db", "upgrade", DATABASE_URL=db.url)
    assert upgraded.returncode == 0 and USING not in upgraded.stderr, upgraded.stderr

    # `make run` on another database (its simulator knows other tasks): not read
    dev_env_file(private_checkout, live_pid, database=database_tag("sqlite:///other.db"))
    other = shell(here, "list", DATABASE_URL=db.url)
    assert other.returncode == 0 and USING not in other.stderr, other.stderr

    dev_env_file(private_checkout, dead_pid(), database=tag)  # `make run` was killed
    stale = shell(here, "list", DATABASE_URL=db.url)
    assert stale.returncode == 0 and USING not in stale.stderr, stale.stderr


@pytest.mark.slow  # starts processes
def test_the_worker_never_reads_it(private_checkout: Path, db: Database, live_pid: int) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    tag = database_tag(db.url)
    dev_env_file(private_checkout, live_pid, database=tag, LUMA_API_BASE=base, PUBLIC_BASE_URL=base)
    log = private_checkout / "worker.log"
    env = {"PATH": os.environ["PATH"], "HOME": str(private_checkout), "DATABASE_URL": db.url}
    env |= {"TRACKER_MEDIA_DIR": "", "LUMA_API_BASE": "http://127.0.0.1:9"}  # nothing listens
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(TRACKER), "worker"], cwd=private_checkout, env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: b"sends queued tasks" in log.read_bytes(), timeout=120, interval=0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    text = log.read_text()
    assert USING not in text and base not in text, text[-3000:]
    assert "PUBLIC_BASE_URL is not set" in text  # as its own environment says


@pytest.mark.slow  # starts a process
def test_a_task_command_outside_a_checkout_needs_database_url(tmp_path: Path) -> None:
    for args in (["list"], ["show", "1"], ["submit", "--prompt", "a kite"], ["poll", "--once"]):
        result = shell(tmp_path, *args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: DATABASE_URL is not set and this folder is not in a")
        assert "DATABASE_URL=sqlite:////" in line and "run it in the checkout" in line
    assert list(tmp_path.iterdir()) == []  # no instance/, no database made here


# -- `tracker dev` writes it, and removes it when it stops -------------------------------------


def start_dev(root: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`tracker dev` in the checkout `root` on free ports, no demo tasks; its log beside it."""
    log = root / "dev.log"
    given = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "PORT": env.pop("PORT", str(free_port())),
        "SIMULATOR_PORT": str(free_port()),
        "SIMULATOR_DEMO": "0",
        "WEB_CONCURRENCY": "1",
        **env,
    }
    with log.open("wb") as out:
        dev = subprocess.Popen([str(TRACKER), "dev"], cwd=root, env=given, stdout=out, stderr=out)
    return dev, log


def answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2, headers=CLOSE)
    except requests.RequestException:
        return False
    return True


def stop(dev: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        dev.send_signal(signum)
    try:
        dev.wait(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()


@pytest.mark.slow  # starts `tracker dev` (the simulator, the web and the worker)
def test_a_second_shell_submits_to_make_runs_simulator(private_checkout: Path) -> None:
    """`make run` in one shell, `tracker submit --wait` in another, in a folder of the checkout
    and with nothing set: the task completes on the simulator and is archived in the
    checkout's instance/. What `make run` was given (a token, a setting) is not in dev.env."""
    port = free_port()
    dev, log = start_dev(
        private_checkout, PORT=str(port), TRACKER_API_TOKEN=TOKEN, TRACKER_MEDIA_ALLOW_PRIVATE="1"
    )
    path = private_checkout / "instance" / "dev.env"
    try:
        wait_for(path.exists, timeout=120, interval=0.2)
        text = path.read_text()
        pid, chosen, tag = read_dev_env(path) or (0, {}, "")
        assert pid == dev.pid
        assert tag == database_tag(f"sqlite:///{private_checkout / 'instance' / 'tracker.db'}")
        assert sorted(chosen) == ["LUMA_API_BASE", "LUMA_API_FLAVOR", "PUBLIC_BASE_URL"]
        assert chosen["LUMA_API_FLAVOR"] == "proxy"
        names = {line.split("=")[0] for line in text.splitlines() if not line.startswith("#")}
        assert names == {"pid", "database", *chosen}  # nothing but the run's and what it chose
        assert TOKEN not in text and "TRACKER_MEDIA_ALLOW_PRIVATE" not in text

        # the simulator and the web answer (each may still be starting when dev.env is written)
        for url in (chosen["LUMA_API_BASE"] + "/", f"http://127.0.0.1:{port}/healthz"):
            wait_for(lambda url=url: answers(url), timeout=120, interval=0.3)
        done = shell(private_checkout / "docs", "submit", "--prompt", "a kite", "--wait")
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()[-3000:]
        assert f"{USING} (pid {dev.pid})" in done.stderr
        archived = private_checkout / "instance" / "media" / "1.mp4"
        assert f"archived: {archived}" in done.stdout, done.stdout
    finally:
        stop(dev, signal.SIGINT)
    assert dev.returncode == 0, log.read_text()[-3000:]
    assert not path.exists()  # deleted on the way out
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    # the simulator keeps its tasks in the checkout's instance/ (`tracker simulate --store`)
    assert str(private_checkout / "instance" / "simulator.db") in text


@pytest.mark.slow  # starts `tracker dev`
def test_dev_env_goes_on_sigterm_and_is_left_to_a_run_that_lives(
    private_checkout: Path, live_pid: int
) -> None:
    path = private_checkout / "instance" / "dev.env"
    dev, log = start_dev(private_checkout)
    try:
        wait_for(path.exists, timeout=120, interval=0.2)
        assert (read_dev_env(path) or (0,))[0] == dev.pid
    finally:
        stop(dev, signal.SIGTERM)
    assert not path.exists(), log.read_text()[-3000:]

    # another run of this checkout holds it (a person's `make run` beside a test's): left alone
    dev_env_file(private_checkout, live_pid, LUMA_API_BASE="http://127.0.0.1:9")
    dev, log = start_dev(private_checkout)
    try:
        wait_for(lambda: b"another run's" in log.read_bytes(), timeout=120, interval=0.2)
    finally:
        stop(dev, signal.SIGTERM)
    assert (read_dev_env(path) or (0,))[0] == live_pid
