"""Finding tasks for the dashboard: the columns a list row shows, and the search queries.

A search runs one indexed query per kind of match, each newest first and limited to a page,
and merges them: a local id (exact), an upstream or source id (exact, or prefix from 3
characters, on the B-tree indexes), the prompt's words (SQLite FTS5, or a GIN index on a
stored to_tsvector('simple', ...) column in PostgreSQL), the last word also as a prefix.
The page it fills, and its cursor, are `listing.py`'s.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Integer,
    Row,
    column,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.orm import QueryableAttribute, Session

from tracker.db import Database
from tracker.tasks.models import Task
from tracker.web.routing import MAX_ID

PROMPT_CHARS = 240
MIN_PREFIX = 3
MAX_INDEXED_PREFIX = 5  # FTS5 prefix indexes of migration 0002: 2 to 5 characters
MAX_WORDS = 8

_LOCAL_ID = re.compile(r"#?([0-9]{1,18})")
_UPSTREAM_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_WORD = re.compile(r"[^\W_]+")

LIST_COLUMNS = (
    Task.id,
    Task.state,
    Task.kind,
    Task.upstream,
    func.substr(Task.user_prompt, 1, PROMPT_CHARS).label("prompt"),
    Task.upstream_id,
    Task.source_task_id,
    Task.thumbnail_url,
    Task.thumbnail_path.is_not(None).label("thumbnail_archived"),
    func.substr(Task.failure_reason, 1, PROMPT_CHARS).label("failure_reason"),
    Task.progress,
    Task.estimate_wait_seconds,
    Task.created_at,
    Task.updated_at,
)

_fts = table("tasks_fts", column("rowid", Integer))
_MATCH = literal_column("tasks_fts").op("MATCH")
_SIMPLE: ColumnClause[Any] = literal_column("'simple'::regconfig")
_VECTOR: ColumnClause[Any] = literal_column("tasks.search_vector")


def words(query: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(query)][:MAX_WORDS]


def fts5_query(tokens: list[str], prefix: bool) -> str:
    """`"red" "sun"*`: every word; the last one also as a prefix when asked (no quotes inside)."""
    parts = [f'"{t}"' for t in tokens]
    if prefix:
        parts[-1] += "*"
    return " ".join(parts)


def tsquery(tokens: list[str], prefix: bool) -> str:
    """`'red' & 'sun':*` for to_tsquery (tokens hold no quotes or operators)."""
    parts = [f"'{t}'" for t in tokens]
    if prefix:
        parts[-1] += ":*"
    return " & ".join(parts)


def _prefix(col: QueryableAttribute[str | None], text: str, db: Database) -> ColumnElement[bool]:
    if db.is_postgres:
        # served by the varchar_pattern_ops index of migration 0002, whatever the collation
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return col.like(escaped + "%", escape="\\")
    # SQLite compares text bytewise (BINARY): a range on the plain index is a prefix
    return (col >= text) & (col < text + "\U0010ffff")


def _last_word_as_prefix(session: Session, db: Database, word: str) -> bool:
    """Is the last word also matched as the start of longer words?

    From 2 to 5 characters, yes: SQLite's FTS5 prefix indexes (migration 0002) answer that
    at once. A longer word that occurs in some prompt is taken whole, and one that does not
    (a half-typed "lighthou") as a prefix: a prefix query longer than the prefix indexes
    merges the lists of every matching word, which for a word in most prompts reads them
    all. PostgreSQL's GIN index answers prefixes of any length cheaply.
    """
    if len(word) < 2:
        return False
    if len(word) <= MAX_INDEXED_PREFIX or not db.is_sqlite:
        return True
    probe = select(_fts.c.rowid).where(_MATCH(f'"{word}"')).limit(1)
    return session.execute(probe).first() is None


class _Search:
    """Run each kind of match as its own indexed query and keep the newest `limit` rows."""

    def __init__(
        self, session: Session, db: Database, state: str | None, cursor: int | None, limit: int
    ) -> None:
        self.session = session
        self.db = db
        self.state = state
        self.cursor = cursor
        self.limit = limit
        self.found: dict[int, Row[Any]] = {}
        self.kinds: list[str] = []

    def run(self, kind: str, statement: Any) -> None:
        rows = self.session.execute(statement.limit(self.limit)).all()
        if rows:
            self.kinds.append(kind)
        for row in rows:
            self.found[row.id] = row

    def where(self, kind: str, condition: ColumnElement[bool]) -> None:
        """Rows matching `condition`, newest first, in the page's state and before its cursor."""
        statement = select(*LIST_COLUMNS).where(condition)
        if self.state:
            # SQLite without statistics would walk (state, id) and test every row of that
            # state; the unary + keeps it on the index of the condition (SQLite's own advice)
            state_column = literal_column("+tasks.state") if self.db.is_sqlite else Task.state
            statement = statement.where(state_column == self.state)
        if self.cursor is not None:
            statement = statement.where(Task.id < self.cursor)
        self.run(kind, statement.order_by(Task.id.desc()))

    def prompt(self, tokens: list[str]) -> None:
        prefix = _last_word_as_prefix(self.session, self.db, tokens[-1])
        if self.db.is_sqlite:
            # the FTS5 table drives, newest first; each hit is joined to its task
            statement = (
                select(*LIST_COLUMNS)
                .select_from(_fts.join(Task, Task.id == _fts.c.rowid))
                .where(_MATCH(fts5_query(tokens, prefix)))
            )
            if self.cursor is not None:
                statement = statement.where(_fts.c.rowid < self.cursor)
            if self.state:
                statement = statement.where(Task.state == self.state)
            self.run("prompt", statement.order_by(_fts.c.rowid.desc()))
        elif self.db.is_postgres:
            # tasks.search_vector is to_tsvector('simple', user_prompt), stored (migration 0002)
            query = func.to_tsquery(_SIMPLE, tsquery(tokens, prefix))
            self.where("prompt", _VECTOR.op("@@")(query))

    def rows(self) -> list[Row[Any]]:
        return sorted(self.found.values(), key=lambda row: row.id, reverse=True)[: self.limit]


def search_rows(
    session: Session,
    db: Database,
    query: str,
    *,
    state: str | None,
    cursor: int | None,
    limit: int,
) -> tuple[list[Row[Any]], list[str]]:
    search = _Search(session, db, state, cursor, limit)
    text = query.strip()
    local = _LOCAL_ID.fullmatch(text)
    if local and int(local.group(1)) <= MAX_ID:  # a larger one is no task (and PostgreSQL errs)
        search.where("id", Task.id == int(local.group(1)))
    if _UPSTREAM_ID.fullmatch(text):
        for kind, col in (("upstream id", Task.upstream_id), ("source id", Task.source_task_id)):
            condition = _prefix(col, text, db) if len(text) >= MIN_PREFIX else col == text
            search.where(kind, condition)
    tokens = words(text)
    if tokens:
        search.prompt(tokens)
    return search.rows(), search.kinds
