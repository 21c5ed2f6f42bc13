"""A callback's path from raw body to committed row (issue 19): at most 8 modules of tracker/,
and none entered again by a module it called.

Traced with `sys.setprofile` (and `threading.setprofile`, so that the group commit's writer
thread is traced too) around `web.callbacks.answer`, which the route and its WSGI fast path
call with the body as read. Counted: every tracker module one of whose functions runs while
the callback is handled, up to its row committed. Not counted: what the route does after the
answer (the metrics), which is no part of the write.

The usual callback (progress) is traced on both databases, and the one that completes a task
on SQLite. On PostgreSQL a callback that moves a task is written the locked way
(tasks/callback_writes.py, after tasks/callback_writes_pg.py passed it on): one module more.
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import rows, store
from tracker.tasks.models import Task
from tracker.tasks.store import NewTask
from tracker.web import callbacks

TRACKER = Path(__file__).resolve().parent.parent / "tracker"
MOST = 8


class Services:
    """What `answer` reads of the app's services."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings


class Tracer:
    """The tracker modules whose functions run, and any module entered again from below."""

    def __init__(self) -> None:
        self.on = False
        self.modules: set[str] = set()
        self.reentered: set[str] = set()

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call" or not self.on:
            return
        module = self.module(frame)
        if module is None:
            return
        self.modules.add(module)
        # the tracker modules on the stack below this call, innermost first, runs collapsed
        stack: list[str] = []
        caller = frame.f_back
        while caller is not None:
            name = self.module(caller)
            if name is not None and (not stack or stack[-1] != name):
                stack.append(name)
            caller = caller.f_back
        if stack and stack[0] != module and module in stack[1:]:
            self.reentered.add(f"{stack[0]} -> {module}")

    @staticmethod
    def module(frame: Any) -> str | None:
        path = Path(frame.f_code.co_filename)
        if not path.is_relative_to(TRACKER):
            return None
        return str(path.relative_to(TRACKER).with_suffix(""))


@pytest.fixture
def traced() -> Iterator[Tracer]:
    tracer = Tracer()
    threading.setprofile(tracer)  # threads started from here on: the group commit's writer
    sys.setprofile(tracer)
    try:
        yield tracer
    finally:
        sys.setprofile(None)
        threading.setprofile(None)


def _sent(db: Database) -> str:
    """A task that was sent and is running (processing, with its upstream id): its token."""
    token = secrets.token_urlsafe(16)
    task = store.create(db, NewTask(kind="generate", user_prompt="a fox"))
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        store.set_state(session, row, "submitting")
        row.callback_token_hash, row.upstream_id = rows.hash_token(token), "up-1"
        store.set_state(session, row, "pending")
        store.set_state(session, row, "processing")
    return token


def _trace(shared: Database, settings: Settings, body: bytes, traced: Tracer) -> None:
    db = Database(shared.url)  # a group commit of its own, its writer started under the tracer
    services = Services(db, settings)
    warm = _sent(db)  # the first callback starts the group commit's writer (traced from here)
    callbacks.answer(services, warm, b'{"id": "up-1", "state": "dreaming", "progress": 10}')  # type: ignore[arg-type]
    token = _sent(db)
    traced.on = True
    (status, answer), understood = callbacks.answer(services, token, body)  # type: ignore[arg-type]
    traced.on = False
    assert (status, understood) == (200, True) and answer["received"] is True
    with db.read() as session:
        row = session.scalar(select(Task).where(Task.callback_token_hash == rows.hash_token(token)))
        assert row is not None and row.state in ("processing", "completed")
    assert "web/callbacks" in traced.modules and "tasks/machine" in traced.modules
    assert len(traced.modules) <= MOST, " ".join(sorted(traced.modules))
    assert traced.reentered == set()


def test_a_progress_callback_crosses_at_most_8_modules(
    db: Database, make_settings: Any, traced: Tracer
) -> None:
    _trace(db, make_settings(), b'{"id": "up-1", "state": "dreaming", "progress": 40}', traced)


def test_a_completing_callback_crosses_at_most_8_modules(
    db: Database, make_settings: Any, traced: Tracer
) -> None:
    body = b'{"id": "up-1", "state": "completed", "assets": {"video": "https://cdn.example/v.mp4"}}'
    _trace(db, make_settings(), body, traced)
