"""Is a database's schema at this code's newest migration? (`/readyz`, `tracker db copy`)"""

from __future__ import annotations

import functools

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection


@functools.cache
def _script() -> ScriptDirectory:
    from tracker.dbmigrate import alembic_config

    return ScriptDirectory.from_config(alembic_config())


def code_heads() -> frozenset[str]:
    """The revisions this code's migrations end at (read once: they change only with the code)."""
    return frozenset(_script().get_heads())


def current_heads(conn: Connection) -> set[str]:
    """The revisions recorded in the database (empty when it was never migrated)."""
    return set(MigrationContext.configure(conn).get_current_heads())


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except Exception:  # alembic raises for a revision its scripts do not have
        return False


def problem(current: set[str]) -> str | None:
    """None when the schema is at this code's head; else why not, and what to run."""
    heads = code_heads()
    if current == heads:
        return None
    if not current:
        return "migrations pending: the database has none applied; run `tracker db upgrade`"
    at, want = ", ".join(sorted(current)), ", ".join(sorted(heads))
    if all(_known(rev) for rev in current):
        return (
            f"migrations pending: the database is at {at}, this code needs {want}; "
            "run `tracker db upgrade`"
        )
    return f"the database is at {at}, newer than this code ({want})"
