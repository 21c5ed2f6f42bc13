"""`make run`: one command that brings up the whole loop on a fresh machine.

Without LUMA_API_KEY it starts the simulated upstream beside the service and
points the service at it, so a newcomer sees tasks go from submitted to
completed without an account. Children are stopped together: if one dies, the
others are stopped too, and Ctrl-C stops everything.

The web process listens on 127.0.0.1 only (HOST overrides it): a laptop's service is not
offered to its network. The Procfile's web line keeps gunicorn.conf.py's 0.0.0.0, which
platforms need.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import requests

from . import settings as settings_module
from .migrate import upgrade
from .settings import SettingsError

log = logging.getLogger("tracker.dev")
SIMULATOR_PORT = int(os.environ.get("SIMULATOR_PORT", "9100"))


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


DEMO_PROMPTS = (
    "A lighthouse at dusk, waves breaking, slow push in",
    "Paper boat drifting down a rainy street, macro lens",
    "Neon-lit alley in the rain, camera tracking a cyclist",
)


def _submit_demo_tasks(base: str, token: str) -> None:
    """On an empty database, give a newcomer something to watch: a few simulated tasks."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 30
    while True:
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


def main() -> int:
    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    port = env.setdefault("PORT", "8000")
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    simulated = not env.get("LUMA_API_KEY")
    if simulated:
        env["LUMA_API_BASE"] = f"http://127.0.0.1:{SIMULATOR_PORT}"
        env.setdefault("TRACKER_MEDIA_ALLOW_PRIVATE", "1")
    try:  # checked before anything starts: a bad setting leaves no child behind
        settings = settings_module.load(env)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    if simulated:
        # the simulator speaks the configured dialect: LUMA_API_FLAVOR=luma gets Luma's own API
        flavor = settings.luma_api_flavor
        simulate = [_bin("tracker"), "simulate", "--port", str(SIMULATOR_PORT), "--flavor", flavor]
        if env.get("SIMULATOR_CALLBACKS", "1") == "0":
            simulate.append("--no-callbacks")
        log.warning(
            "No LUMA_API_KEY: using the simulated upstream at %s (%s API)%s",
            env["LUMA_API_BASE"],
            "Luma's own" if flavor == "luma" else "the proxy's",
            " (callbacks off)" if "--no-callbacks" in simulate else "",
        )
        children.append(("simulator", subprocess.Popen(simulate, env=env)))
    upgrade(settings.database_url)
    children.append(("web", subprocess.Popen(web_command(env), env=env)))
    children.append(("worker", subprocess.Popen([_bin("tracker"), "worker"], env=env)))
    if simulated and env.get("SIMULATOR_DEMO", "1") != "0":
        _submit_demo_tasks(_local_url(env), env.get("TRACKER_API_TOKEN", ""))
    log.warning("Dashboard: %s/  (Ctrl-C stops everything)", _local_url(env))

    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, child in children:
            if child.poll() is not None:
                log.error("%s exited with code %s; stopping the rest", name, child.returncode)
                stopping, code = True, 1
        time.sleep(0.3)
    for _name, child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 15
    for _name, child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code
