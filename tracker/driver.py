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
    """Statements on one driver connection, in one transaction (see `write`)."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect
        self.cursor = connection.cursor()
        self.statement: str | None = None  # the last one, for the error SQLAlchemy would raise

    def execute(self, statement: UpdateBase, values: dict[str, Any]) -> int:
        """Run an INSERT, UPDATE or DELETE; the number of rows it touched.

        Like `Connection.execute`, the columns an INSERT or UPDATE sets are the keys of
        `values` that name its table's columns (the others fill its WHERE clause).
        """
        table = statement.table
        keys = tuple(name for name in values if name in table.c)
        compiled = compile_for(statement, self.dialect, keys)
        self.statement = compiled.sql
        self.cursor.execute(compiled.sql, compiled.parameters(values))
        return int(self.cursor.rowcount)

    def first(self, statement: ClauseElement, values: dict[str, Any]) -> Row | None:
        """Run a SELECT; its first row, or None."""
        compiled = compile_for(statement, self.dialect)
        self.statement = compiled.sql
        self.cursor.execute(compiled.sql, compiled.parameters(values))
        found = self.cursor.fetchone()
        if found is None:
            return None
        return Row(
            (name, value if proc is None else proc(value))
            for name, proc, value in zip(compiled.columns, compiled.results, found, strict=True)
        )


@contextmanager
def write(db: Database) -> Iterator[Transaction]:
    """A write transaction on a pooled connection, committed when the block ends cleanly.

    SQLite's starts with BEGIN IMMEDIATE (the write lock up front, waited for
    cooperatively for at most the web's lock wait); PostgreSQL's driver begins one itself.
    """
    dialect = db.engine.dialect
    pooled = db.engine.raw_connection()
    connection = pooled.driver_connection
    if connection is None:  # only after close(): a fresh checkout always has one
        raise RuntimeError("the pool gave a closed connection")
    tx = Transaction(connection, dialect)
    try:
        try:
            if db.is_sqlite:
                tx.statement = "BEGIN IMMEDIATE"
                busy = dialect.loaded_dbapi.OperationalError
                begin_immediate(tx.cursor.execute, db.lock_wait, busy)
            yield tx
            tx.statement = "COMMIT"
            connection.commit()
        except BaseException:
            with suppress(Exception):  # a dead connection: the error that killed it is raised
                connection.rollback()
            raise
    except dialect.loaded_dbapi.Error as exc:
        dead = dialect.is_disconnect(exc, connection, tx.cursor)
        if dead:
            pooled.invalidate(exc)
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
