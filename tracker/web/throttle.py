"""Failed sign-in attempts, limited per client address: guessing the token is not free.

The three ways in (the login form, a Bearer token, HTTP Basic) share one budget per
address: after FAILURES wrong tokens within WINDOW_SECONDS, every attempt that carries a
token gets 429 with Retry-After, without the token being compared, until the oldest
failure leaves the window. Only failures count, so a client that knows the token is never
slowed down, and a browser already signed in (its session cookie) is never refused.

The counters are limits' moving window in this process's memory: with several gunicorn
processes an address gets the budget once per process, still a few dozen guesses a
minute rather than hundreds a second. The address is the one ProxyFix settled on
(TRACKER_TRUSTED_PROXIES), so behind a proxy it is the client's, not the proxy's.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, g, request
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

FAILURES = 10
WINDOW_SECONDS = 60


class FailedAttempts:
    """One app's counters of wrong tokens, by client address."""

    def __init__(self, failures: int = FAILURES, window_seconds: int = WINDOW_SECONDS) -> None:
        self.item = RateLimitItemPerSecond(failures, window_seconds)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None if it may try now."""
        if self.limiter.test(self.item, address):
            return None
        reset = self.limiter.get_window_stats(self.item, address).reset_time
        return max(1, math.ceil(reset - time.time()))

    def failed(self, address: str) -> None:
        self.limiter.hit(self.item, address)


def init_app(app: Flask) -> None:
    app.extensions["tracker_failed_attempts"] = FailedAttempts()


def _counters() -> FailedAttempts:
    counters = current_app.extensions["tracker_failed_attempts"]
    if not isinstance(counters, FailedAttempts):
        raise RuntimeError("the failed-attempt counters are set up by throttle.init_app")
    return counters


def _address() -> str:
    return request.remote_addr or "unknown"


def before_attempt() -> None:
    """Raise 429 (with Retry-After) if this client used up its failures; call before comparing."""
    wait = _counters().retry_after(_address())
    if wait is not None:
        raise TooManyRequests(
            description="too many wrong tokens from this address; try again later",
            retry_after=wait,
        )


def attempt_failed() -> None:
    """Count one wrong token for this client (once per request, however many checks ran)."""
    if g.get("tracker_attempt_failed"):
        return
    g.tracker_attempt_failed = True
    _counters().failed(_address())
