"""Worker test helpers: simulators on demand, tasks to work on, their states, heartbeat rows;
worker processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lumasim.simulator import Simulator
from tests.support.factory import make_tasks
from tracker.db import Database
from tracker.tasks.models import Task, WorkerBeat, utcnow

SimFactory = Callable[..., Simulator]


def simulators() -> Iterator[SimFactory]:
    """A factory of started simulators, all stopped when the test ends."""
    started: list[Simulator] = []

    def build(**options: Any) -> Simulator:
        options = {"processing_after": 0.2, "complete_after": 0.6} | options
        simulator = Simulator(**options).start()
        started.append(simulator)
        return simulator

    yield build
    for simulator in started:
        simulator.stop()


def new_tasks(db: Database, count: int, prompt: str = "a slow pan over the sea") -> list[int]:
    return make_tasks(db, count, "queued", user_prompt=prompt)


def states(db: Database, ids: list[int] | None = None) -> dict[int, str]:
    query = select(Task.id, Task.state)
    if ids is not None:
        query = query.where(Task.id.in_(ids))
    with db.read() as session:
        return {row.id: row.state for row in session.execute(query)}


def all_in(db: Database, wanted: set[str]) -> bool:
    found = states(db)
    return bool(found) and set(found.values()) <= wanted


def add_worker(db: Database, name: str, seen_ago: float, **extra: Any) -> str:
    """A worker's heartbeat row, last seen `seen_ago` seconds ago (`tasks_claimed`,
    `paused_until` in `extra`); its name, as its leases give it in `claimed_by`."""
    now = utcnow()
    with db.write() as session:
        session.add(
            WorkerBeat(
                id=name,
                host="machine-a",
                pid=4242,
                started_at=now - timedelta(seconds=seen_ago + 30),
                last_seen_at=now - timedelta(seconds=seen_ago),
                tasks_claimed=extra.get("tasks_claimed", 0),
                paused_until=extra.get("paused_until"),
            )
        )
    return name


TRACKER = str(Path(sys.executable).parent / "tracker")


KEY = "sk-test-worker-process-key-42"


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log, self.out = log, log.with_suffix(".out")
        with log.open("wb") as err, self.out.open("wb") as out:
            self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=err)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> int:
        self.popen.send_signal(signum)
        return self.popen.wait(timeout=20)
