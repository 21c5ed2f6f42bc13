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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from .db import Database, begin_immediate

Processor = Callable[[Any], Any]


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
        self._write(compiled.sql, compiled.parameters(values))

    def _write(self, sql: str, parameters: Sequence[Any] | dict[str, Any]) -> None:
        self.statement = sql
        self.cursor.execute(sql, parameters)

    def first(self, statement: ClauseElement, values: dict[str, Any]) -> Row | None:
        """Run a SELECT; its first row, or None."""
        compiled = compile_for(statement, self.dialect)
        self.statement = compiled.sql
        self._select(compiled.sql, compiled.parameters(values))
        found = self.cursor.fetchone()
        if found is None:
            return None
        return Row(
            (name, value if proc is None else proc(value))
            for name, proc, value in zip(compiled.columns, compiled.results, found, strict=True)
        )

    def _select(self, sql: str, parameters: Sequence[Any] | dict[str, Any]) -> None:
        self.cursor.execute(sql, parameters)

    def begin(self, lock_wait: float | None) -> None:
        """BEGIN IMMEDIATE: the write lock up front, waited for cooperatively (db.py)."""
        self.statement = "BEGIN IMMEDIATE"
        busy = self.dialect.loaded_dbapi.OperationalError
        begin_immediate(self.cursor.execute, lock_wait, busy)

    def commit(self) -> None:
        self.statement = "COMMIT"
        self.connection.commit()


class Batched(Transaction):
    """PostgreSQL's: the same statements in two round trips instead of five.

    BEGIN travels with the first SELECT, and the writes wait to travel with COMMIT: every
    trip to the server is a send, a wake-up on both sides and, under gevent, a switch, and
    measured that way they were most of the route's CPU on PostgreSQL, on both sides
    (docs/benchmarks.md, "Callback ingest"). Several statements in one message need the
    values bound in the client: psycopg's ClientCursor quotes them (its documented
    client-side binding). The connection is in autocommit (db.driver_engine), so psycopg
    sends no BEGIN of its own; the row lock (SELECT ... FOR UPDATE) lasts until COMMIT.
    """

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        super().__init__(connection, dialect)
        self.begun = False
        self.writes: list[str] = []

    def _cursor(self) -> Any:
        return self.dialect.loaded_dbapi.ClientCursor(self.connection)

    def _write(self, sql: str, parameters: Sequence[Any] | dict[str, Any]) -> None:
        self.writes.append(self.cursor.mogrify(sql, parameters))

    def _select(self, sql: str, parameters: Sequence[Any] | dict[str, Any]) -> None:
        if self.begun:
            self.cursor.execute(sql, parameters)
            return
        self.cursor.execute(f"BEGIN; {sql}", parameters)
        self.cursor.nextset()  # past BEGIN's empty result, to the SELECT's
        self.begun = True

    def begin(self, lock_wait: float | None) -> None:
        """Nothing yet: BEGIN goes with the first SELECT, or with the writes."""

    def commit(self) -> None:
        batch = [*self.writes, "COMMIT"]
        if not self.begun:
            batch.insert(0, "BEGIN")
        self.statement = "; ".join(batch)
        self.writes = []
        self.cursor.execute(self.statement)  # no parameters: nothing in it is read as one


@contextmanager
def write(db: Database) -> Iterator[Transaction]:
    """A write transaction on a pooled connection, committed when the block ends cleanly."""
    engine = db.driver_engine
    dialect = engine.dialect
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    if connection is None:  # only after close(): a fresh checkout always has one
        raise RuntimeError("the pool gave a closed connection")
    tx = Batched(connection, dialect) if db.is_postgres else Transaction(connection, dialect)
    try:
        try:
            tx.begin(db.lock_wait)
            yield tx
            tx.commit()
        except BaseException:
            with suppress(Exception):  # a dead connection: the error that killed it is raised
                connection.rollback()  # psycopg: ROLLBACK if the server's transaction is open
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
