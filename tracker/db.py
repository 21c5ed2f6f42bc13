"""Engine and session factories shared by the web app, the worker and the CLI.

SQLite gets WAL (readers never wait for the writer) and a busy timeout, and its
write transactions start with BEGIN IMMEDIATE: a deferred transaction that reads
and then writes can fail at once with "database is locked" when another process
wrote in between, and the busy timeout cannot help with that case.

The worker and the CLI wait up to 30 s for the write lock. The web process must not:
SQLite's busy wait sleeps inside the C library, which holds a thread for the whole wait
and, under gevent, the whole process (its /healthz included). So the web process gives
SQLite no busy timeout and retries BEGIN IMMEDIATE itself with `time.sleep`, which
gevent makes cooperative, for at most `lock_wait` seconds; then the request fails with
OperationalError, which the web app answers with 503 and Retry-After.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Result,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from tracker.sql import begin_immediate
from tracker.sql import is_busy as is_busy  # the web answers a busy database with a 503

SQLITE_BUSY_TIMEOUT_MS = 30_000  # the worker and the CLI
WEB_LOCK_WAIT = 2.0  # seconds a web request waits for SQLite's write lock, then 503
# the web process never waits inside SQLite: under gevent that wait would stop every request of
# the process while the lock's holder (in another process) is off the CPU
_NO_BUSY_WAIT_MS = 0


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, lock_wait: float | None = None) -> Engine:
    """`lock_wait`: wait at most this long for SQLite's write lock, cooperatively (the web)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if lock_wait is None else _NO_BUSY_WAIT_MS
        engine = create_engine(
            url,
            connect_args={"timeout": busy_ms / 1000},
            # a request waiting for a pooled connection gives up as soon as one waiting for
            # the lock would; SQLite connections are cheap, so the pool is not the limit
            **({} if lock_wait is None else {"pool_size": 20, "pool_timeout": lock_wait}),
        )
        _tune_sqlite(engine, busy_ms, lock_wait)
        return engine
    # pre-ping: a connection dropped by a database restart is replaced, not handed out
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _tune_sqlite(engine: Engine, busy_ms: int, lock_wait: float | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # let SQLAlchemy, not the driver, emit BEGIN (the documented pysqlite recipe)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if not conn.get_execution_options().get("tracker_write", False):
            conn.exec_driver_sql("BEGIN")
            return
        begin_immediate(conn.exec_driver_sql, lock_wait, OperationalError)


class Database:
    """One engine and two session factories: reads, and writes that take the lock up front."""

    def __init__(self, url: str, *, lock_wait: float | None = None) -> None:
        self.url = url
        self.lock_wait = lock_wait
        self.engine = make_engine(url, lock_wait)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgres = self.engine.dialect.name == "postgresql"
        write_engine = self._write_engine = self.engine.execution_options(tracker_write=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A write transaction on a bare connection (SQLAlchemy Core, no Session): the callback
        route's, where a Session's bookkeeping would cost more than the statements."""
        with self._write_engine.begin() as connection:
            yield connection

    @cached_property
    def driver_engine(self) -> Engine:
        """The callback route's pool (tracker/sql.py).

        On PostgreSQL, one without pre-ping: the ping is a round trip on every checkout, a
        fifth of the route's database work (measured, docs/benchmarks.md "Callback
        ingest"). A connection found dead there is replaced by the route's one retry.
        """
        if not self.is_postgres:
            return self.engine
        # autocommit: each of the route's statements is its own transaction (tracker/sql.py)
        return create_engine(self.url, pool_size=8, max_overflow=12, isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        if "driver_engine" in self.__dict__ and self.driver_engine is not self.engine:
            self.driver_engine.dispose()
        self.engine.dispose()


def table_of(model: type[DeclarativeBase]) -> Table:
    """The Table a model maps, for Core statements.

    SQLAlchemy types `__table__` as any FromClause; insert() and update() want a Table.
    """
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to one table")
    return table


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched.

    Session.execute returns a CursorResult for those, but is typed to return a plain Result.
    """
    if not isinstance(result, CursorResult):
        raise TypeError("rowcount is known for an UPDATE or DELETE only")
    return result.rowcount


def log_failure(log: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """A loop's failure: one line when the database is unreachable (a restart is expected, and
    a traceback per pass says nothing more), the whole traceback for anything else."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        orig = getattr(exc, "orig", None)
        log.error(message + ": database unavailable (%s)", *args, type(orig or exc).__name__)
    else:
        log.error(message, *args, exc_info=exc)
