"""`tracker dev` (what `make run` runs) as a test starts it: its own ports, database and folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TRACKER = Path(sys.executable).parent / "tracker"


def dev_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A newcomer's environment (no key: the simulator), with free ports; `settings` on top."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PORT": str(free_port()),
        "SIMULATOR_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'tracker.db'}",
        "TRACKER_MEDIA_DIR": str(tmp_path / "media"),
        "WEB_CONCURRENCY": "1",
        **settings,
    }


def start_dev(env: dict[str, str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`tracker dev` from the checkout, its output (every child's too) in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(TRACKER), "dev"], cwd=ROOT, env=env, stdout=out, stderr=out, **popen
        )
