"""The folder the processes of one machine share their metrics through, and its upkeep.

prometheus_client's multiprocess mode: every process writes its counters and histograms
into files named `<kind>_<pid>.db` in PROMETHEUS_MULTIPROC_DIR, and a scrape of any web
process adds up every file there, so one scrape per machine sees the web processes and
the worker alike (they share the folder: `instance/metrics` by default, under the folder
they are started from, as the Procfile and `make run` do).

Standard library only, on purpose: the gunicorn master loads this file by its path
(gunicorn.conf.py) and must not import the tracker package or prometheus_client before
gevent patches the workers (they would keep unpatched locks and sockets).

- A starting process (the gunicorn master, the worker) removes the files of processes that
  are gone, and only those: the worker may be running while the web restarts, and its
  counts must stay. A process that is gone no longer counts; as after any restart,
  Prometheus reads the drop as a counter reset.
- gunicorn's `child_exit` marks a dead web process (`mark_dead`): its live gauges go, and
  its counters stay until the next start, so that the machine's sums never go down while
  the master runs.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def enabled(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """TRACKER_METRICS=0 (or false/no/off) turns metrics off; on by default."""
    env = os.environ if env is None else env
    return env.get("TRACKER_METRICS", "").strip().lower() not in ("0", "false", "no", "off")


def default_dir(cwd: Path | None = None) -> str:
    """PROMETHEUS_MULTIPROC_DIR, else `instance/metrics` under the folder started from."""
    given = os.environ.get(ENV, "").strip()
    return given or str((cwd or Path.cwd()) / "instance" / "metrics")


def prepare(directory: str | None = None) -> str:
    """Create the folder, tell prometheus_client (and child processes) about it, prune it."""
    directory = directory or default_dir()
    Path(directory).mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = directory
    prune_dead(directory)
    return directory


def alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def prune_dead(directory: str) -> list[str]:
    """Delete the files of processes that are no longer running; return their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        match = _FILE.match(name)
        if match and not alive(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:  # another starting process took it
                continue
    return removed


def mark_dead(pid: int, directory: str | None = None) -> None:
    """prometheus_client.multiprocess.mark_process_dead, without importing prometheus_client.

    The same two lines as the library's (its live gauges' files go), here so that the
    gunicorn master, which calls it from `child_exit`, never imports prometheus_client:
    the workers it forks afterwards would inherit the library's unpatched locks.
    """
    directory = directory or os.environ.get(ENV, "")
    if not directory:
        return
    for name in glob.glob(os.path.join(directory, f"gauge_live*_{pid}.db")):
        try:
            os.remove(name)
        except FileNotFoundError:
            continue
