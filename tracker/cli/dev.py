"""`make run`: one command that brings up the whole loop on a fresh machine.

Without LUMA_API_KEY it starts the simulated upstream beside the service and
points the service at it, so a newcomer sees tasks go from submitted to
completed without an account. Children are stopped together: if one dies, the
others are stopped too, and Ctrl-C stops everything.

Each child runs in a process group of its own, so a Ctrl-C in the terminal reaches this
runner only. It then stops the children itself, newest first (`_stop_all`), and waits for
them: without that, a Ctrl-C during the first seconds hit each child wherever its start had
got to (a traceback from the middle of an import), and this runner exited before them.

The web process listens on 127.0.0.1 only (HOST overrides it): a laptop's service is not
offered to its network. The Procfile's web line keeps gunicorn.conf.py's 0.0.0.0, which
platforms need.

While it runs, `instance/dev.env` holds the settings it chose (the simulator's address, the
callbacks' base URL; never a key), with its pid and a tag of its database: the task commands
in the checkout (submit, list, show, ...) on that database read it below their own
environment (`actions.command_settings`), so a second shell talks to the same world. It is
deleted on the way out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path

import requests

from tracker import settings as settings_module
from tracker.settings import DIALECTS, SettingsError, choice, number

log = logging.getLogger("tracker.dev")
DEV_ENV = "dev.env"  # in instance/: what `tracker dev` chose, for the task commands
# the only names read from it: what `tracker dev` may choose (never a key, token or password)
CHOSEN = ("LUMA_API_BASE", "LUMA_API_FLAVOR", "PUBLIC_BASE_URL", "TRACKER_MEDIA_ALLOW_PRIVATE")


def checkout(here: Path | None = None) -> Path | None:
    """The nearest folder at or above `here` (the current one) with luma-tracker's pyproject."""
    here = (here or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        try:
            with (folder / "pyproject.toml").open("rb") as handle:
                if tomllib.load(handle).get("project", {}).get("name") == "luma-tracker":
                    return folder
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return None


def database_tag(url: str) -> str:
    """Which database a run uses, written without the URL (it may hold a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def read_dev_env(path: Path) -> tuple[int, dict[str, str], str] | None:
    """`tracker dev`'s pid, choices and database tag, while it lives; None otherwise."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    split = (line.partition("=") for line in lines if line[:1] != "#")
    pairs = {name.strip(): value.strip() for name, equals, value in split if equals}
    pid = int(pairs["pid"]) if pairs.get("pid", "").isdigit() else 0
    try:
        if pid > 0:  # (0 would name this process's own group)
            os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        pass
    except OSError:  # gone (killed, the file stayed behind)
        return None
    chosen = {name: pairs[name] for name in CHOSEN if name in pairs}
    return (pid, chosen, pairs.get("database", "")) if pid > 0 else None


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


DEMO_PROMPTS = (
    "A lighthouse at dusk, waves breaking, slow push in",
    "Paper boat drifting down a rainy street, macro lens",
    "Neon-lit alley in the rain, camera tracking a cyclist",
)


def _submit_demo_tasks(base: str, token: str, stopping: Callable[[], bool]) -> None:
    """On an empty database, give a newcomer something to watch: a few simulated tasks."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 30
    while True:
        if stopping():
            return
        try:
            listing = requests.get(f"{base}/api/tasks?limit=1", headers=headers, timeout=10)
            break
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            if time.monotonic() > deadline:
                log.warning("the web process did not answer; no demo tasks submitted")
                return
            time.sleep(0.3)
    if listing.status_code != 200 or listing.json().get("tasks"):
        return
    for prompt in DEMO_PROMPTS:
        if stopping():
            return
        try:
            requests.post(
                f"{base}/api/tasks", json={"user_prompt": prompt}, headers=headers, timeout=30
            )
        except requests.RequestException as exc:  # a demo is a courtesy: never stop the service
            log.warning("a demo task was not submitted: %s", type(exc).__name__)
            return
    log.warning(
        "Submitted %d demo tasks to the simulator (SIMULATOR_DEMO=0 skips this)", len(DEMO_PROMPTS)
    )


def web_command(env: dict[str, str]) -> list[str]:
    """gunicorn with the Procfile's settings, bound to HOST (127.0.0.1 unless set)."""
    host = env.get("HOST", "").strip() or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    bind = f"{host}:{env.get('PORT', '8000')}"
    # on the command line, --bind overrides the config file's
    return [_bin("gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py", "--bind", bind]


def _local_url(env: dict[str, str]) -> str:
    """Where this machine reaches the web process: 127.0.0.1 unless bound to one address."""
    host = env.get("HOST", "").strip()
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 (a comparison, not a bind)
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('PORT', '8000')}"


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A child in a process group of its own: the terminal's Ctrl-C is this runner's to pass on."""
    return subprocess.Popen(command, env=env, process_group=0)


def _stop_all(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Stop each child, newest first (the worker before the simulator it talks to).

    The worker and the simulator get SIGTERM, their clean exit; gunicorn gets SIGINT, its
    quick shutdown (the graceful one waits for every keep-alive connection to go quiet).
    A gunicorn worker forked a moment ago loses the master's signal if it comes before the
    worker sets its handlers, and the master then waits its whole graceful_timeout: so when
    gunicorn is not gone after a few seconds, its whole process group gets SIGINT, each
    second (not at once: a worker told twice prints a traceback on its way out). Whatever
    is left at the deadline is killed.
    """
    deadline = time.monotonic() + 15
    for name, child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGINT if name == "web" else signal.SIGTERM)
        patience = time.monotonic() + 3
        while child.poll() is None and time.monotonic() < deadline:
            if name == "web" and time.monotonic() > patience:
                with suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGINT)  # the master and its workers
            with suppress(subprocess.TimeoutExpired):
                child.wait(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        if child.poll() is None:
            log.warning("%s did not stop in time; killing it", name)
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _write_dev_env(path: Path, chosen: Mapping[str, str], database_url: str) -> None:
    """What this run chose, with its pid and database, for the task commands of the checkout."""
    lines = [f"pid={os.getpid()}", f"database={database_tag(database_url)}"]
    lines += [f"{name}={chosen[name]}" for name in sorted(chosen)]
    path.parent.mkdir(exist_ok=True)  # the checkout's instance/, the one folder made on its own
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text("# `tracker dev` (make run) chose these\n" + "\n".join(lines) + "\n")
    os.replace(temporary, path)  # a reader sees the whole file or none


def main() -> int:
    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    port = env.setdefault("PORT", "8000")
    # what this run chooses itself (a variable already set is the person's): instance/dev.env
    chosen = {"PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    # a key of either kind (LUMA_API_KEY, LUMA_ACCOUNT_<NAME>_KEY) means a real upstream
    simulated = not env.get("LUMA_API_KEY") and not any(
        name.startswith("LUMA_ACCOUNT_") and name.endswith("_KEY") and value
        for name, value in env.items()
    )
    instance = (checkout() or Path.cwd()) / "instance"  # the checkout's, as the commands'
    try:  # checked before anything starts: a bad setting leaves no child behind
        simulator_port = number(env, "SIMULATOR_PORT", 9100, minimum=1)
        private = {"TRACKER_MEDIA_ALLOW_PRIVATE": "1"} if simulated else {}  # its media links
        chosen = {name: value for name, value in (chosen | private).items() if name not in env}
        if simulated:  # the simulator's address, and the dialect it speaks
            chosen["LUMA_API_BASE"] = f"http://127.0.0.1:{simulator_port}"
            chosen["LUMA_API_FLAVOR"] = choice(env, "LUMA_API_FLAVOR", DIALECTS)
        env.update(chosen)
        settings = settings_module.load(env, instance=instance)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2

    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # from here on a Ctrl-C (or the terminal closing) is a request to stop, whenever it comes
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    code = 0
    try:
        if simulated:
            # the simulator speaks the configured dialect: LUMA_API_FLAVOR=luma gets Luma's own;
            # it keeps its tasks in instance/simulator.db, so a restart can still extend them
            flavor = settings.luma_api_flavor
            simulate = [_bin("tracker"), "simulate", "--port", str(simulator_port)]
            simulate += ["--flavor", flavor, "--store", str(instance / "simulator.db")]
            if env.get("SIMULATOR_CALLBACKS", "1") == "0":
                simulate.append("--no-callbacks")
            log.warning(
                "No LUMA_API_KEY: using the simulated upstream at %s (%s API)%s",
                env["LUMA_API_BASE"],
                "Luma's own" if flavor == "luma" else "the proxy's",
                " (callbacks off)" if "--no-callbacks" in simulate else "",
            )
            children.append(("simulator", _start(simulate, env)))
        from tracker.dbschema import upgrade

        upgrade(settings.database_url)  # an unusable database: one line (tracker/cli/__init__.py)
        if (owner := read_dev_env(instance / DEV_ENV)) is None:
            _write_dev_env(instance / DEV_ENV, chosen, settings.database_url)
        else:  # the first run of a checkout keeps it (tests start theirs beside a person's)
            log.warning("%s is another run's (pid %d): left alone", instance / DEV_ENV, owner[0])
        if not stopping:
            children.append(("web", _start(web_command(env), env)))
            children.append(("worker", _start([_bin("tracker"), "worker"], env)))
        if not stopping and simulated and env.get("SIMULATOR_DEMO", "1") != "0":
            _submit_demo_tasks(_local_url(env), env.get("TRACKER_API_TOKEN", ""), lambda: stopping)
        if not stopping:
            log.warning("Dashboard: %s/  (Ctrl-C stops everything)", _local_url(env))
            log.warning("In another shell here, .venv/bin/tracker uses this run's settings")
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    log.error("%s exited with code %s; stopping the rest", name, child.returncode)
                    stopping, code = True, 1
            time.sleep(0.3)
    finally:
        _stop_all(children)
        if (read_dev_env(instance / DEV_ENV) or (0,))[0] == os.getpid():  # not another run's
            (instance / DEV_ENV).unlink()
    return code
