"""The dashboard's reads: a page of tasks, the per-state counts, one task's chain.

Every query here is shaped to stay fast at millions of rows:

- pages are keyset (`id < cursor ORDER BY id DESC LIMIT n`) on the primary key or on
  (state, id), so page 20,000 costs what page 1 costs;
- the tab counts come from `state_counts` (kept by lifecycle.set_state), never a GROUP BY;
- a search (`search.py`, which also names the columns a row shows) runs one indexed query
  per kind of match and fills the same page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session, selectinload

from tracker.db import Database
from tracker.settings import DIALECTS
from tracker.tasks.models import StateCount, Task
from tracker.tasks.states import STATES
from tracker.web.routing import MAX_ID
from tracker.web.search import LIST_COLUMNS, search_rows

UNFINISHED = ("queued", "submitting", "pending", "processing")
PAGE_SIZE = 50
MAX_CURSOR = MAX_ID  # tasks.id is a 32-bit integer on PostgreSQL: a larger one is refused there
# ASCII digits only: str.isdigit() also takes "²", which int() refuses
_CURSOR = re.compile(r"[0-9]{1,19}")


def cursor_from(raw: str) -> int | None:
    """A page cursor from the query string; anything else (or past every id) is the first page.

    Never an error: the cursor comes from our own "Older" link, and a mangled one is best
    answered with the newest tasks.
    """
    if not _CURSOR.fullmatch(raw):
        return None
    value = int(raw)
    return value if 0 < value <= MAX_CURSOR else None


@dataclass
class Page:
    rows: list[Row[Any]]
    next_cursor: int | None
    counts: dict[str, int]
    state: str | None = None
    query: str = ""
    cursor: int | None = None
    kinds: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def other_dialect_waiting(session: Session, flavor: str) -> dict[str, int]:
    """Unfinished tasks sent with another LUMA_API_FLAVOR, by dialect (the index on
    (upstream, state) answers it without reading the table): nobody follows them now."""
    rows = session.execute(
        select(Task.upstream, func.count())
        .where(Task.upstream.in_([f for f in DIALECTS if f != flavor]), Task.state.in_(UNFINISHED))
        .group_by(Task.upstream)
    )
    return {upstream: int(count) for upstream, count in rows}


def state_counts(session: Session) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATES, 0)
    for state, count in session.execute(select(StateCount.state, StateCount.count)):
        counts[state] = max(0, int(count or 0))
    return counts


def page(
    session: Session,
    db: Database,
    *,
    state: str | None = None,
    query: str = "",
    cursor: int | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """One page, newest first, and the counts for the tabs."""
    kinds: list[str] = []
    if query.strip():
        rows, kinds = search_rows(session, db, query, state=state, cursor=cursor, limit=limit + 1)
    else:
        statement = select(*LIST_COLUMNS).order_by(Task.id.desc()).limit(limit + 1)
        if state:
            statement = statement.where(Task.state == state)
        if cursor is not None:
            statement = statement.where(Task.id < cursor)
        rows = list(session.execute(statement).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        rows=rows,
        next_cursor=rows[-1].id if more and rows else None,
        counts=state_counts(session),
        state=state,
        query=query,
        cursor=cursor,
        kinds=kinds,
    )


@dataclass
class Detail:
    task: Task
    extends: list[Row[Any]]
    extensions: list[Row[Any]]


CHAIN_COLUMNS = (
    Task.id,
    Task.state,
    Task.upstream_id,
    func.substr(Task.user_prompt, 1, 120).label("prompt"),
    Task.created_at,
)
MAX_EXTENSIONS = 100


def detail(session: Session, task_id: int) -> Detail | None:
    """A task with its events, the task it extends and the extensions made from it."""
    task = session.scalar(select(Task).where(Task.id == task_id).options(selectinload(Task.events)))
    if task is None:
        return None
    extends: list[Row[Any]] = []
    if task.source_task_id:
        extends = list(
            session.execute(
                select(*CHAIN_COLUMNS)
                .where(Task.upstream_id == task.source_task_id)
                .order_by(Task.id.desc())
                .limit(5)
            ).all()
        )
    extensions: list[Row[Any]] = []
    if task.upstream_id:
        extensions = list(
            session.execute(
                select(*CHAIN_COLUMNS)
                .where(Task.source_task_id == task.upstream_id)
                .order_by(Task.id)
                .limit(MAX_EXTENSIONS)
            ).all()
        )
    return Detail(task=task, extends=extends, extensions=extensions)
