"""Core statements run on the database driver's own cursor: the callback route's writes.

Why: measured in process (docs/benchmarks.md, "Callback ingest"), a callback's SELECT, UPDATE
and INSERT cost 0.27 ms of CPU through `Connection.execute` on SQLite and 0.71 ms on
PostgreSQL, and 0.03 and 0.26 ms through the driver: SQLAlchemy's per-statement work (cache
keys, execution contexts, events, result objects) was most of the route's database time.

SQLite (`Transaction`, `write`): statements in a BEGIN IMMEDIATE transaction, its lock waited
for cooperatively (`begin_immediate`, which Database.write uses too). PostgreSQL
(`Statements`, `statements`): single statements in autocommit, each prepared once a
connection. Kept from SQLAlchemy: the Core statements, compiled here once per dialect and
set of columns; each column type's bind and result processing (`UTCDateTime`); the pool;
and its exceptions (a dead connection is invalidated, not handed out again).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import DateTime, Dialect, TypeDecorator
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

if TYPE_CHECKING:  # the Database hands its pools here, and imports `begin_immediate` from here
    from tracker.db import Database


Processor = Callable[[Any], Any]
S = TypeVar("S", bound="Statements")


def is_busy(exc: Exception) -> bool:
    """SQLite's "database is locked", raised by the driver or wrapped by SQLAlchemy."""
    orig = exc.orig if isinstance(exc, OperationalError) else exc
    return getattr(orig, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def begin_immediate(
    execute: Callable[[str], object], lock_wait: float | None, busy: type[Exception]
) -> None:
    """BEGIN IMMEDIATE, retried with `time.sleep` (another thread or greenlet runs meanwhile)
    for at most `lock_wait` seconds while locked; `busy`: what `execute` raises then."""
    deadline = None if lock_wait is None else time.monotonic() + lock_wait
    pause = 0.001
    while True:
        try:
            execute("BEGIN IMMEDIATE")
            return
        except busy as exc:
            if deadline is None or not is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.02)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware on the way out on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


@dataclass(frozen=True)
class Compiled:
    """One statement for one dialect: its SQL text, and how its values go in and out."""

    sql: str
    order: tuple[str, ...] | None  # parameter names in order (qmark), or None (named)
    binds: Mapping[str, Processor | None]
    columns: tuple[str, ...]  # the names of a SELECT's columns
    results: tuple[Processor | None, ...]

    def parameters(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        binds = self.binds
        if self.order is not None:
            return [
                value if (proc := binds[name]) is None else proc(value)
                for name in self.order
                for value in (values[name],)
            ]
        return {
            name: value if (proc := binds.get(name)) is None else proc(value)
            for name, value in values.items()
        }


_compiled: dict[tuple[int, str, tuple[str, ...] | None], Compiled] = {}


def compile_for(
    statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None = None
) -> Compiled:
    """`statement` compiled for `dialect` (an INSERT or UPDATE: for the columns `keys`), once.

    Cached by the statement's identity: callers pass module-level statements, built once.
    """
    key = (id(statement), dialect.name, keys)
    found = _compiled.get(key)
    if found is not None:
        return found
    compiled = statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    binds = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in compiled.binds.items()
    }
    columns = getattr(statement, "selected_columns", ())
    made = Compiled(
        sql=compiled.string,
        order=tuple(compiled.positiontup or ()) if compiled.positional else None,
        binds=binds,
        columns=tuple(column.key for column in columns),
        results=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ),
    )
    _compiled[key] = made
    return made


class Row(dict[str, Any]):
    """A selected row, read by name as an attribute (as `machine.snapshot` reads one)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Statements:
    """PostgreSQL's: each statement its own transaction, prepared once a connection.

    The pool's connections are in autocommit (db.driver_engine): psycopg sends no BEGIN, so
    a statement is one round trip (the extended protocol: Bind, Execute, Sync).
    """

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect
        self.cursor = connection.cursor()
        self.statement: str | None = None  # the last one, for the error SQLAlchemy would raise

    def _send(self, compiled: Compiled, values: dict[str, Any]) -> None:
        self.cursor.execute(compiled.sql, compiled.parameters(values), prepare=True)

    def first(self, statement: ClauseElement, values: dict[str, Any]) -> Row | None:
        """Run a statement that returns rows; its first row, or None."""
        compiled = compile_for(statement, self.dialect)
        self.statement = compiled.sql
        self._send(compiled, values)
        return _row(compiled, self.cursor.fetchone())

    def all(self, statement: ClauseElement, values: dict[str, Any]) -> list[Row]:
        """Run a statement that returns rows; every row."""
        compiled = compile_for(statement, self.dialect)
        self.statement = compiled.sql
        self._send(compiled, values)
        return [
            row for found in self.cursor.fetchall() if (row := _row(compiled, found)) is not None
        ]


def _row(compiled: Compiled, found: Sequence[Any] | None) -> Row | None:
    if found is None:
        return None
    return Row(
        (name, value if proc is None else proc(value))
        for name, proc, value in zip(compiled.columns, compiled.results, found, strict=True)
    )


class Transaction(Statements):
    """Statements in one transaction, each run when called: SQLite's BEGIN IMMEDIATE, or on
    PostgreSQL an explicit BEGIN on the autocommit connection (a callback that moves a task:
    its row locked, its counters in the one order every move takes them)."""

    def _send(self, compiled: Compiled, values: dict[str, Any]) -> None:
        if self.postgres:
            super()._send(compiled, values)  # prepared, as single statements are
        else:
            self.cursor.execute(compiled.sql, compiled.parameters(values))

    @property
    def postgres(self) -> bool:
        return self.dialect.name == "postgresql"

    def execute(self, statement: UpdateBase, values: dict[str, Any]) -> None:
        """An INSERT, UPDATE or DELETE.

        Like `Connection.execute`, the columns an INSERT or UPDATE sets are the keys of
        `values` that name its table's columns (the others fill its WHERE clause).
        """
        table = statement.table
        compiled = compile_for(statement, self.dialect, tuple(k for k in values if k in table.c))
        self.statement = compiled.sql
        self._send(compiled, values)

    def begin(self, lock_wait: float | None) -> None:
        """SQLite: BEGIN IMMEDIATE, the write lock up front, waited for cooperatively."""
        if self.postgres:
            self.statement = "BEGIN"
            self.cursor.execute("BEGIN")
            return
        self.statement = "BEGIN IMMEDIATE"
        busy = self.dialect.loaded_dbapi.OperationalError
        begin_immediate(self.cursor.execute, lock_wait, busy)

    def commit(self) -> None:
        self.statement = "COMMIT"
        if self.postgres:
            self.cursor.execute("COMMIT")
        else:
            self.connection.commit()

    def abandon(self) -> None:
        """After an error: roll back."""
        with suppress(Exception):  # a dead connection: the error that killed it is raised
            if self.postgres:
                self.cursor.execute("ROLLBACK")
            else:
                self.connection.rollback()


@contextmanager
def _checked_out(db: Database, make: Callable[[Any, Dialect], S]) -> Iterator[S]:
    """`make(connection, dialect)` on a pooled driver connection; driver errors as SQLAlchemy's."""
    engine = db.driver_engine
    dialect = engine.dialect
    try:
        pooled = engine.raw_connection()
    except dialect.loaded_dbapi.Error as exc:  # the server is down: SQLAlchemy's error, a 503
        raise DBAPIError.instance(
            None, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
        ) from exc
    connection = pooled.driver_connection
    if connection is None:  # only after close(): a fresh checkout always has one
        raise RuntimeError("the pool gave a closed connection")
    user = make(connection, dialect)
    try:
        yield user
    except dialect.loaded_dbapi.Error as exc:
        dead = dialect.is_disconnect(exc, connection, user.cursor)
        if dead:  # the server restarted, say: the pool's other connections are gone too
            pooled.invalidate(exc)
            engine.dispose()
        raise DBAPIError.instance(
            user.statement,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=dead,
            dialect=dialect,
        ) from exc
    finally:
        pooled.close()  # back to the pool (or away, when invalidated)


@contextmanager
def write(db: Database, *, waited: float = 0.0) -> Iterator[Transaction]:
    """A write transaction on a pooled connection, committed when the block ends.

    `waited` (SQLite): seconds the callers have waited already (in a group commit's queue),
    taken off the wait for the write lock, so that none waits past `db.lock_wait` in all.
    """
    with _checked_out(db, Transaction) as tx:
        try:
            tx.begin(None if db.lock_wait is None else max(0.0, db.lock_wait - waited))
            yield tx
            tx.commit()
        except BaseException:
            tx.abandon()
            raise


def statements(db: Database) -> AbstractContextManager[Statements]:
    """PostgreSQL: single statements, each its own transaction, on a pooled connection."""
    return _checked_out(db, Statements)
