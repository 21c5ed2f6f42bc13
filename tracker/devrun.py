"""`make run`: one command that brings up the whole loop on a fresh machine.

Without LUMA_API_KEY it starts the simulated upstream beside the service and
points the service at it, so a newcomer sees tasks go from submitted to
completed without an account. Children are stopped together: if one dies, the
others are stopped too, and Ctrl-C stops everything.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from . import settings as settings_module
from .cli import upgrade
from .settings import SettingsError

log = logging.getLogger("tracker.dev")
SIMULATOR_PORT = int(os.environ.get("SIMULATOR_PORT", "9100"))


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def main() -> int:
    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    port = env.setdefault("PORT", "8000")
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    if not env.get("LUMA_API_KEY"):
        env["LUMA_API_BASE"] = f"http://127.0.0.1:{SIMULATOR_PORT}"
        env.setdefault("TRACKER_MEDIA_ALLOW_PRIVATE", "1")
        simulate = [_bin("tracker"), "simulate", "--port", str(SIMULATOR_PORT)]
        if env.get("SIMULATOR_CALLBACKS", "1") == "0":
            simulate.append("--no-callbacks")
        log.warning(
            "No LUMA_API_KEY: using the simulated upstream at %s%s",
            env["LUMA_API_BASE"],
            " (callbacks off)" if "--no-callbacks" in simulate else "",
        )
        children.append(("simulator", subprocess.Popen(simulate, env=env)))
    try:
        settings = settings_module.load(env)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    upgrade(settings.database_url)
    children.append(
        ("web", subprocess.Popen([_bin("gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"], env=env))
    )
    children.append(("worker", subprocess.Popen([_bin("tracker"), "worker"], env=env)))
    log.warning("Dashboard: http://127.0.0.1:%s/  (Ctrl-C stops everything)", port)

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
