"""Fresh, unmigrated databases for tests that need one beside the session's (readyz, db copy).

On PostgreSQL each gets its own name inside TEST_DATABASE_URL's server (as
`own_postgres_database` does for the session's), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support.databases import drop_postgres_database, postgres_url


@contextmanager
def blank_database(kind: str, folder: Path) -> Iterator[str]:
    """A URL of a new empty database of `kind` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'blank-{uuid.uuid4().hex[:8]}.db'}"
        return
    server = postgres_url()
    name = f"tracker_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = server.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        drop_postgres_database(url)
