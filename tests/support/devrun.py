"""`tracker dev` (what `make run` runs) as a test starts it: its own ports, database, folders
and checkout."""

from __future__ import annotations

import os
import shutil
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


def private_checkout(root: Path) -> Path:
    """A checkout of this project at `root` (its pyproject.toml; the code `make run` serves
    linked in), so a `tracker dev` started there keeps its instance/ (dev.env, the simulator's
    store) apart from the developer's own checkout, which may be running `make run`."""
    if not (root / "pyproject.toml").exists():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "pyproject.toml", root)
        for name in ("wsgi.py", "gunicorn.conf.py", "tracker"):
            (root / name).symlink_to(ROOT / name)
    return root.resolve()  # as the processes started there see their folder


def start_dev(env: dict[str, str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`tracker dev` in a private checkout beside `log`, its output (every child's too) there."""
    root = private_checkout(log.parent / "checkout")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(TRACKER), "dev"], cwd=root, env=env, stdout=out, stderr=out, **popen
        )
