"""The list page's reads: a page of tasks, found by state or by search, and the per-state
counts.

Every query here is shaped to stay fast at millions of rows:

- pages are keyset (`id < cursor ORDER BY id DESC LIMIT n`) on the primary key or on
  (state, id), so page 20,000 costs what page 1 costs;
- the tab counts come from `state_counts` (kept by the task store), never a GROUP BY;
- a search runs one indexed query per kind of match, each newest first and limited to a
  page, and merges them into the same page: a local id (exact), an upstream or source id
  (exact, or prefix from 3 characters, on the B-tree indexes), the prompt's words (SQLite
  FTS5, or a GIN index on a stored to_tsvector('simple', ...) column in PostgreSQL), the
  last word also as a prefix;
- one account's tasks (`?account=`): one query per state on the (account, state) index, merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
from tracker.settings import DIALECTS
from tracker.tasks.models import Account, StateCount, Task
from tracker.tasks.states import STATES
from tracker.web import MAX_ID

PROMPT_CHARS = 240
MIN_PREFIX = 3
MAX_INDEXED_PREFIX = 5  # FTS5 prefix indexes of migration 0002: 2 to 5 characters
MAX_WORDS = 8

_LOCAL_ID = re.compile(r"#?([0-9]{1,18})")
_UPSTREAM_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_WORD = re.compile(r"[^\W_]+")

LIST_COLUMNS = (
    *(Task.id, Task.state, Task.kind, Task.upstream, Task.account),
    func.substr(Task.user_prompt, 1, PROMPT_CHARS).label("prompt"),
    *(Task.upstream_id, Task.source_task_id, Task.thumbnail_url),
    Task.thumbnail_path.is_not(None).label("thumbnail_archived"),
    func.substr(Task.failure_reason, 1, PROMPT_CHARS).label("failure_reason"),
    *(Task.progress, Task.estimate_wait_seconds, Task.created_at, Task.updated_at),
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


@dataclass
class _Search:
    """Run each kind of match as its own indexed query and keep the newest `limit` rows (of
    one account's tasks when `account` is given)."""

    session: Session
    db: Database
    state: str | None
    cursor: int | None
    limit: int
    account: str | None = None
    found: dict[int, Row[Any]] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)

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
        if self.account is not None:  # the same: on the condition's index, not the account's
            account = literal_column("+tasks.account") if self.db.is_sqlite else Task.account
            statement = statement.where(account == self.account)
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
            if self.account is not None:
                statement = statement.where(Task.account == self.account)
            self.run("prompt", statement.order_by(_fts.c.rowid.desc()))
        elif self.db.is_postgres:
            # tasks.search_vector is to_tsvector('simple', user_prompt), stored (migration 0002)
            query = func.to_tsquery(_SIMPLE, tsquery(tokens, prefix))
            self.where("prompt", _VECTOR.op("@@")(query))

    def rows(self) -> list[Row[Any]]:
        return sorted(self.found.values(), key=lambda row: row.id, reverse=True)[: self.limit]


def search_rows(
    session: Session, db: Database, query: str, *, state: str | None, cursor: int | None,
    limit: int, account: str | None = None,
) -> tuple[list[Row[Any]], list[str]]:  # fmt: skip
    search = _Search(session, db, state, cursor, limit, account)
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


def account_rows(
    session: Session, db: Database, account: str, *, state: str | None, cursor: int | None,
    limit: int,
) -> list[Row[Any]]:  # fmt: skip
    """One account's tasks, newest first: a query per state, each on the (account, state)
    index (its entries in id order on SQLite), merged as a search's."""
    search = _Search(session, db, None, cursor, limit)
    for each in [state] if state else STATES:
        statement = select(*LIST_COLUMNS).where(Task.account == account, Task.state == each)
        if cursor is not None:
            statement = statement.where(Task.id < cursor)
        search.run(each, statement.order_by(Task.id.desc()))
    return search.rows()


# -- a page ---------------------------------------------------------------------------------


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
    account: str | None = None  # only this account's tasks (?account=)

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


def disabled_since(session: Session) -> dict[str, Any]:
    """When each disabled account was disabled, by name (the panel of accounts says it)."""
    found = select(Account.name, Account.disabled_at).where(Account.enabled.is_(False))
    return {name: at for name, at in session.execute(found)}


def page(
    session: Session, db: Database, *, state: str | None = None, query: str = "",
    cursor: int | None = None, limit: int = PAGE_SIZE, account: str | None = None,
) -> Page:  # fmt: skip
    """One page, newest first (of one account's tasks, given one), and the counts for the tabs
    (of every task: they come from `state_counts`)."""
    kinds: list[str] = []
    if query.strip():
        rows, kinds = search_rows(
            session, db, query, state=state, cursor=cursor, limit=limit + 1, account=account
        )
    elif account is not None:
        rows = account_rows(session, db, account, state=state, cursor=cursor, limit=limit + 1)
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
        account=account,
    )
