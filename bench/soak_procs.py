"""The soak's processes: each tracker machine's web and worker, and the helpers beside them.

Every process starts in a session of its own, so `kill -9` of a web reaches its whole
gunicorn process group (master and workers), as the issue pins, and a stop leaves nothing
behind. Resident memory is read from /proc: no dependency for one number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(
    port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts connections on 127.0.0.1:`port` (or `proc` died: an error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:.0f} s")


@dataclass
class Child:
    """One process (and its session) with its output appended to a log file."""

    args: list[str]
    log: Path
    env: dict[str, str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Child:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """kill -9 of its whole process group, reaped, so a restart finds its port free."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):  # workers the master left behind
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code of a clean stop."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def rss(self) -> dict[int, int]:
        """Resident kilobytes of each live process in its group, by pid."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                if os.getpgid(int(entry.name)) != self.proc.pid:
                    continue
            except (OSError, ProcessLookupError):
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    found[int(entry.name)] = int(line.split()[1])
        return found


@dataclass
class Machine:
    """One tracker machine: its folder (instance/ inside), its web and its worker."""

    name: str
    folder: Path
    port: int
    env: dict[str, str]
    web: Child = field(init=False)
    worker: Child = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**self.env, "PORT": str(self.port), "PUBLIC_BASE_URL": self.url}
        gunicorn = [str(BIN / "gunicorn"), "wsgi:app", "--config", str(ROOT / "gunicorn.conf.py")]
        self.web = Child(
            [*gunicorn, "--pythonpath", str(ROOT)], self.folder / "web.log", env, self.folder
        )
        self.worker = Child(
            [str(BIN / "tracker"), "worker"], self.folder / "worker.log", env, self.folder
        )

    def start(self) -> Machine:
        self.web.start()
        self.worker.start()
        wait_port(self.port, proc=self.web.proc)
        return self

    def stop(self) -> list[str]:
        """Stop both; the roles that did not stop cleanly."""
        codes = {"web": self.web.stop(), "worker": self.worker.stop()}
        return [f"{self.name} {role}: {code}" for role, code in codes.items() if code != 0]
