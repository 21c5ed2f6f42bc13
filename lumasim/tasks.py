"""What the simulator keeps: its tasks (whose state follows the clock), the requests it saw,
and the faults a test queued. Shared by both voices (proxy.py, luma.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATES = ("pending", "processing", "completed", "failed")
TERMINAL = frozenset({"completed", "failed"})
FAIL_WORD = re.compile(r"\bfail", re.IGNORECASE)  # "fail", "failing", "failure" ...
FAILURE_REASON = "Frame moderation failed"


@dataclass
class RequestRecord:
    """One request as the simulator saw it; `ended` and `status` are set once it is answered."""

    method: str
    path: str
    route: str
    task_id: str | None
    started: float  # time.monotonic()
    ended: float | None = None
    status: int | None = None  # 0: the connection was dropped on purpose
    key: str = ""  # the account (API key) it was made with, once authorized (accounts.py)


@dataclass
class SimTask:
    """One simulated generation: its state follows the clock unless a test forced one."""

    id: str
    request_body: dict[str, Any]
    notify_hook: str | None
    created_at: datetime  # UTC, what the raw object shows
    created_mono: float
    processing_at: float  # monotonic times
    done_at: float
    fails: bool
    source_id: str | None = None  # the extended task
    owner: str = ""  # the API key that made it: to every other key it is an unknown id
    output: str = "mp4"  # the main asset: a video, or an image (luma: jpg or png)
    revision: int = 0  # luma: upscales and audio added so far, each a new video of the same id
    model: str | None = None  # luma: the creating model, kept once `request_body` is a rerun's
    forced_state: str | None = None
    forced_reason: str | None = None
    forced_at: float = 0.0

    def state_at(self, now: float) -> str:
        if self.forced_state is not None:
            return self.forced_state
        if now >= self.done_at:
            return "failed" if self.fails else "completed"
        return "processing" if now >= self.processing_at else "pending"

    @property
    def state(self) -> str:
        return self.state_at(time.monotonic())

    def failure_reason_at(self, now: float) -> str | None:
        if self.state_at(now) != "failed":
            return None
        return (self.forced_reason if self.forced_state else None) or FAILURE_REASON

    def finished_at(self) -> float | None:
        """When it stopped counting against the upstream's concurrency; None: it still does."""
        if self.forced_state is None or self.forced_at >= self.done_at:
            return self.done_at
        return self.forced_at if self.forced_state in TERMINAL else None


def peak(points: Iterable[tuple[float, int]]) -> int:
    """Largest running sum of +1/-1 events; at equal times ends sort first (touching != overlap)."""
    current = best = 0
    for _, delta in sorted(points):
        current += delta
        best = max(best, current)
    return best
