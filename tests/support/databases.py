"""The test databases: SQLite always, PostgreSQL too when TEST_DATABASE_URL is set (CI sets it)."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, delete, text, update

from tracker.db import Database
from tracker.tasks.models import Base, StateCount

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()


BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])


def postgres_url() -> str:
    url = TEST_DATABASE_URL
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def own_postgres_database(url: str) -> str:
    """A database of this test run's own beside the given one, so parallel runs never collide."""
    name = f"tracker_test_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    finally:
        admin.dispose()


def empty_tables(database: Database) -> None:
    """Every table of the models emptied (children first), the per-state counters zeroed.

    The tables come from the metadata, so a table added later is emptied without a word here;
    `state_counts` keeps its one row per state (migration 0001 made them) at zero.
    """
    counters = StateCount.__table__
    with database.write() as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table is counters:
                session.execute(update(counters).values(count=0))
            else:
                session.execute(delete(table))
