"""Backoff and lease values: the only source of the times written to schedule and lease columns.

One helper, `Backoff`, covers every retry timing the service has (the query backoff, the
archive retries, the wait before a refused create is tried again, the pause after a 429);
the values functions give the store and the claims the columns to write, so that a lease or
a schedule is never made up anywhere else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.settings import Settings


@dataclass(frozen=True)
class Backoff:
    """`base * 2**attempt` up to `cap`, times a jitter in [0.8, 1.0] when `jitter`.

    A Retry-After the upstream gave replaces the wait (`retry_after_wins`) or is its floor.
    """

    base: float
    cap: float
    jitter: bool = True
    retry_after_wins: bool = False

    def delay(self, attempt: int = 0, retry_after: float | None = None) -> float:
        if retry_after is not None and self.retry_after_wins:
            return retry_after
        wait: float = min(self.cap, self.base * 2 ** min(max(attempt, 0), 20))
        if self.jitter:
            wait *= random.uniform(0.8, 1.0)
        return wait if retry_after is None else max(wait, retry_after)


# a create refused for rate or connection (surely not acted on): tried again after this,
# or after the Retry-After the upstream named
REQUEUE = Backoff(10.0, 10.0, jitter=False, retry_after_wins=True)
# a 429 on a query that names no Retry-After still means "not now"
RATE_LIMIT = Backoff(5.0, 5.0, jitter=False, retry_after_wins=True)
# an archive attempt that failed: 30 s, 1 min, 2 min, ... up to an hour
ARCHIVE = Backoff(30.0, 3600.0)
ARCHIVE_MAX_ATTEMPTS = 8
# one video download may take this long (storage.download stops it then); an archive lease
# outlives two of them (the video and its thumbnail)
DOWNLOAD_DEADLINE = 900.0
# the account's credit balance: read at most once in this many seconds, by one process
CREDIT_CHECK_INTERVAL = 60.0


def query_backoff(settings: Settings) -> Backoff:
    """From TRACKER_POLL_AFTER up to TRACKER_POLL_MAX_INTERVAL, by quiet polls in a row."""
    return Backoff(max(settings.poll_after, 1.0), settings.poll_max_interval)


def query_delay(settings: Settings, quiet_polls: int) -> float:
    return query_backoff(settings).delay(quiet_polls)


def archive_delay(attempts: int) -> float:
    """The wait after the `attempts`-th failed archive attempt (the first: 30 s)."""
    return ARCHIVE.delay(attempts - 1)


def query_retry(
    settings: Settings, quiet_polls: int, retry_after: float | None
) -> tuple[float, datetime]:
    """A failed query: (the wait, the next check), the poll backoff or the Retry-After if later."""
    wait = query_backoff(settings).delay(quiet_polls, retry_after)
    return wait, datetime.now(UTC) + timedelta(seconds=wait)


def after(seconds: float, now: datetime) -> datetime:
    return now + timedelta(seconds=seconds)


def first_check(settings: Settings, now: datetime) -> datetime:
    """A task just accepted upstream (or imported): queried if no news after TRACKER_POLL_AFTER."""
    return now + timedelta(seconds=settings.poll_after)


def lease(seconds: float, owner: str | None, now: datetime) -> dict[str, Any]:
    return {"claimed_until": now + timedelta(seconds=seconds), "claimed_by": owner}


def released() -> dict[str, Any]:
    """A lease given back: the task is free for the next claim."""
    return {"claimed_until": None}


def unscheduled() -> dict[str, Any]:
    """Nothing more to send or query (a final state): no lease, no schedule."""
    return {"claimed_until": None, "next_check_at": None}
