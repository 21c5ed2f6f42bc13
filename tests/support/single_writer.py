"""The single-writer rule (issue 19): only tracker/tasks/ inserts or updates the tasks table.

A SQLAlchemy `before_cursor_execute` hook on every engine of the test process looks at each
INSERT INTO or UPDATE of `tasks` and finds the module that issued it: the first frame of
tracker/ on the stack that is not the database plumbing (tracker/db.py: a Session's flush at
the end of a `db.write()` block runs from there, on behalf of the block's own module).
Migrations, `tracker db copy` (tracker/cli/dbcopy.py) and the tests themselves are exempt.
A violation fails the test that caused it, at its teardown: raising inside the hook could be
swallowed by the code under test (a worker loop that logs and carries on).

The callback route's fast path writes on the driver's own cursor, past these hooks; it lives
in tracker/tasks/ (tasks/callback_writes.py, tasks/callback_writes_pg.py), as the rule asks.
Code run in a child process (gunicorn, the worker) is checked by the same tests in process.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

TRACKER = Path(__file__).resolve().parents[2] / "tracker"
OWNER = TRACKER / "tasks"
PLUMBING = {TRACKER / "db.py"}
# migrations (run by dbschema.upgrade) and `tracker db copy` write rows of their own making
EXEMPT = {TRACKER / "cli" / "dbcopy.py", TRACKER / "dbschema.py"}
WRITES_TASKS = re.compile(r"^\s*(INSERT\s+INTO|UPDATE)\s+\"?tasks\"?[\s(]", re.IGNORECASE)

violations: list[str] = []


def writer(frames: Iterator[Any]) -> Path | None:
    """The tracker module that issued a statement, from the innermost frame outwards
    (None: no tracker module, such as a test's own setup or a migration)."""
    for frame in frames:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(TRACKER) and path not in PLUMBING:
            return path
    return None


def _frames() -> Iterator[Any]:
    frame: Any = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back


@event.listens_for(Engine, "before_cursor_execute")
def _check(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    if not WRITES_TASKS.match(statement):
        return
    path = writer(_frames())
    if path is None or path.is_relative_to(OWNER) or path in EXEMPT:
        return
    first = statement.split("\n", 1)[0][:80]
    violations.append(f"{path.relative_to(TRACKER.parent)} wrote the tasks table: {first}")


@pytest.fixture(autouse=True)
def _only_the_store_writes_tasks() -> Iterator[None]:
    del violations[:]
    yield
    found, violations[:] = list(violations), []
    assert found == [], "only tracker/tasks/ may write the tasks table"
