"""Core statements run on the database driver's own cursor: the callback route's transaction.

Why: measured in process (docs/benchmarks.md, "Callback ingest"), a callback's SELECT, UPDATE
and INSERT cost 0.27 ms of CPU through `Connection.execute` on SQLite and 0.71 ms on
PostgreSQL, and 0.03 and 0.26 ms through the driver: SQLAlchemy's per-statement work (cache
keys, execution contexts, events, result objects) was most of the route's database time.

What is kept from SQLAlchemy: the statements themselves (Core, built once in the modules that
own them), compiled here once per dialect and set of columns; each column type's own bind
and result processing (UTC datetimes as SQLite's text, state names); the engine's pool (and
its pre-ping on PostgreSQL); SQLite's cooperative BEGIN IMMEDIATE (`db.begin_immediate`); and
its exceptions: a driver error leaves here as SQLAlchemy's (`OperationalError` is still the
web's 503), and a connection found dead is invalidated, not handed out again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from .db import Database, begin_immediate

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class Compiled:
    """One statement for one dialect: its SQL text, and how its values go in and out."""

    name: str  # PostgreSQL: its prepared statement's name on a connection
    sql: str
    order: tuple[str, ...] | None  # parameter names in order (qmark, $1), or None (named)
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


_NUMBERED = PGDialect_psycopg(paramstyle="numeric_dollar")
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
    if dialect.name == "postgresql":  # $1, $2...: the form PREPARE takes (see Batched)
        dialect = _NUMBERED
    compiled = statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    binds = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in compiled.binds.items()
    }
    columns = getattr(statement, "selected_columns", ())
    made = Compiled(
        name=f"tracker_{len(_compiled)}",
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
    """A selected row, read by name as an attribute (as `machine.TaskFields.of` reads one)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Transaction:
    """Statements on one driver connection, in one transaction (see `write`): SQLite's.

    Each statement runs when called: SQLite is in the process, a statement costs no trip.
    """

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect
        self.cursor = self._cursor()
        self.statement: str | None = None  # the last one, for the error SQLAlchemy would raise

    def _cursor(self) -> Any:
        return self.connection.cursor()

    def execute(self, statement: UpdateBase, values: dict[str, Any]) -> None:
        """An INSERT, UPDATE or DELETE.

        Like `Connection.execute`, the columns an INSERT or UPDATE sets are the keys of
        `values` that name its table's columns (the others fill its WHERE clause).
        """
        table = statement.table
        compiled = compile_for(statement, self.dialect, tuple(k for k in values if k in table.c))
        self._write(compiled, values)

    def _write(self, compiled: Compiled, values: dict[str, Any]) -> None:
        self.statement = compiled.sql
        self.cursor.execute(compiled.sql, compiled.parameters(values))

    def first(self, statement: ClauseElement, values: dict[str, Any]) -> Row | None:
        """Run a SELECT; its first row, or None."""
        compiled = compile_for(statement, self.dialect)
        self.statement = compiled.sql
        self._select(compiled, values)
        found = self.cursor.fetchone()
        if found is None:
            return None
        return Row(
            (name, value if proc is None else proc(value))
            for name, proc, value in zip(compiled.columns, compiled.results, found, strict=True)
        )

    def _select(self, compiled: Compiled, values: dict[str, Any]) -> None:
        self.cursor.execute(compiled.sql, compiled.parameters(values))

    def begin(self, lock_wait: float | None) -> None:
        """BEGIN IMMEDIATE: the write lock up front, waited for cooperatively (db.py)."""
        self.statement = "BEGIN IMMEDIATE"
        busy = self.dialect.loaded_dbapi.OperationalError
        begin_immediate(self.cursor.execute, lock_wait, busy)

    def commit(self) -> None:
        self.statement = "COMMIT"
        self.connection.commit()

    def abandon(self) -> None:
        """After an error: roll back (psycopg: ROLLBACK if the server's transaction is open)."""
        with suppress(Exception):  # a dead connection: the error that killed it is raised
            self.connection.rollback()


class Batched(Transaction):
    """PostgreSQL's: the same statements in two round trips instead of five.

    BEGIN travels with the first SELECT, and the writes wait to travel with COMMIT: every
    trip to the server is a send, a wake-up on both sides and, under gevent, a switch, and
    measured that way they were most of the route's CPU on PostgreSQL, on both sides
    (docs/benchmarks.md, "Callback ingest"). Several statements in one message are the
    simple protocol, so each statement is a prepared one (PREPARE once a connection, then
    EXECUTE: the server neither parses nor plans it again) whose values psycopg's
    ClientCursor quotes (its documented client-side binding). The connection is in
    autocommit (db.driver_engine), so psycopg sends no BEGIN of its own; the row lock
    (SELECT ... FOR UPDATE) lasts until COMMIT.
    """

    def __init__(self, connection: Any, dialect: Dialect, prepared: set[str]) -> None:
        super().__init__(connection, dialect)
        self.begun = False
        self.writes: list[str] = []
        self.prepared = prepared  # the names this connection holds (the pool keeps the set)
        self.preparing: set[str] = set()

    def _cursor(self) -> Any:
        return self.dialect.loaded_dbapi.ClientCursor(self.connection)

    def _text(self, compiled: Compiled, values: dict[str, Any]) -> str:
        """EXECUTE with the values quoted in, after a PREPARE the first time on this connection."""
        parameters = compiled.parameters(values)
        text = f"EXECUTE {compiled.name}"
        if parameters:
            marks = ", ".join(["%s"] * len(parameters))
            text = self.cursor.mogrify(f"{text}({marks})", parameters)
        if compiled.name in self.prepared or compiled.name in self.preparing:
            return text
        self.preparing.add(compiled.name)
        return f"PREPARE {compiled.name} AS {compiled.sql}; {text}"

    def _write(self, compiled: Compiled, values: dict[str, Any]) -> None:
        self.writes.append(self._text(compiled, values))

    def _select(self, compiled: Compiled, values: dict[str, Any]) -> None:
        text = self._text(compiled, values)
        if not self.begun:
            text, self.begun = f"BEGIN; {text}", True
        self.statement = text
        self.cursor.execute(text)  # no parameters: nothing in it is read as a placeholder
        while self.cursor.nextset():  # past BEGIN's and PREPARE's empty results
            pass

    def begin(self, lock_wait: float | None) -> None:
        """Nothing yet: BEGIN goes with the first SELECT, or with the writes."""

    def commit(self) -> None:
        batch = [*self.writes, "COMMIT"]
        if not self.begun:
            batch.insert(0, "BEGIN")
        self.statement = "; ".join(batch)
        self.writes = []
        self.cursor.execute(self.statement)
        self.prepared |= self.preparing

    def abandon(self) -> None:
        """Roll back, and forget every prepared statement: a PREPARE outlives a rollback, and
        whether this one's ran before the error is not known."""
        super().abandon()
        with suppress(Exception):
            self.cursor.execute("DEALLOCATE ALL")
        self.prepared.clear()


@contextmanager
def write(db: Database) -> Iterator[Transaction]:
    """A write transaction on a pooled connection, committed when the block ends cleanly."""
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
    tx: Transaction
    if db.is_postgres:
        tx = Batched(connection, dialect, pooled.info.setdefault("tracker_prepared", set()))
    else:
        tx = Transaction(connection, dialect)
    try:
        try:
            tx.begin(db.lock_wait)
            yield tx
            tx.commit()
        except BaseException:
            tx.abandon()
            raise
    except dialect.loaded_dbapi.Error as exc:
        dead = dialect.is_disconnect(exc, connection, tx.cursor)
        if dead:  # the server restarted, say: the pool's other connections are gone too
            pooled.invalidate(exc)
            engine.dispose()
        raise DBAPIError.instance(
            tx.statement,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=dead,
            dialect=dialect,
        ) from exc
    finally:
        pooled.close()  # back to the pool (or away, when invalidated)
