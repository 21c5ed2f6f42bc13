"""`GET /api/tasks/<id>?wait=SECONDS`: answer as soon as the task is final, or after the wait.

A waiter reads one column of one row every POLL_EVERY seconds and sleeps in between: under
gunicorn's gevent worker (gunicorn.conf.py) `time.sleep` is cooperative, so a waiter holds
no OS thread and callbacks are served beside any number of them. The admission gate's slot
(web/admission.py, "8 requests in the app at once") is given back while the waiter sleeps,
and taken again, in turn, before it answers: sleeping waiters take no slot from callbacks.
Its reads of the one column run without a slot (a read never waits on SQLite's write lock).
Still, waiters are capped
per process (MAX_WAITERS; a few under a thread-per-request server, where each one does hold
a thread): past the cap the answer comes at once with the current state, and the
`X-Tracker-Wait` header says `skipped`, so a client knows to ask again.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

from sqlalchemy import select

from tracker.db import Database
from tracker.flows import validate
from tracker.tasks.models import FINAL_STATES, Task

MAX_WAIT = 60.0
POLL_EVERY = 0.5
MAX_WAITERS = 256  # cooperative (gevent): each costs a greenlet and a query every POLL_EVERY
MAX_THREAD_WAITERS = 2  # a thread per request: never more than this many threads asleep

_lock = threading.Lock()
_waiters = 0


def wait_arg(raw: str | None) -> float:
    """?wait= as seconds (0 when absent); anything but a number from 0 to 60 is a 400."""
    if raw is None:
        return 0.0
    problem = validate.ValidationError(
        "wait", f"wait must be a number of seconds from 0 to {MAX_WAIT:g}"
    )
    if not raw.isascii() or len(raw) > 32:  # any float's repr fits; nothing longer is read
        raise problem
    try:
        value = float(raw)
    except ValueError:
        raise problem from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT:
        raise problem
    return value


def cooperative() -> bool:
    """True under gevent's monkey patching: a sleeping waiter then holds no thread."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("time"))


def cap() -> int:
    return MAX_WAITERS if cooperative() else MAX_THREAD_WAITERS


def _state(db: Database, task_id: int) -> str | None:
    with db.read() as session:
        return session.scalar(select(Task.state).where(Task.id == task_id))


def until_final(db: Database, task_id: int, seconds: float, gate: Any = None) -> bool:
    """Sleep until the task is final (or gone) or `seconds` pass; False when past the cap.

    `gate` is the admission gate whose slot this request holds (None outside gevent).
    """
    global _waiters
    with _lock:
        if _waiters >= cap():
            return False
        _waiters += 1
    if gate is not None:
        gate.leave()
    try:
        deadline = time.monotonic() + seconds
        while True:
            state = _state(db, task_id)
            left = deadline - time.monotonic()
            if state is None or state in FINAL_STATES or left <= 0:
                return True
            time.sleep(min(POLL_EVERY, left))
    finally:
        with _lock:
            _waiters -= 1
        if gate is not None:
            gate.enter(timeout=3600.0)  # back in line; admission gives it back after the answer
