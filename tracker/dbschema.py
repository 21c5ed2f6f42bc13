"""The database's schema: Alembic pointed at this code's migrations (the one way a schema is
created or moved), and whether a database is at this code's newest migration.

The CLI (`tracker db`), `make run` (cli/dev.py), `tracker db copy` and `/readyz` all need
it; kept out of tracker/cli/, none of them has to import the CLI (and the CLI none of them
back). Alembic is imported on use: most CLI commands never migrate.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), "head")


# -- is a database's schema current? (`/readyz`, `tracker db copy`) -------------------------


@functools.cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def code_heads() -> frozenset[str]:
    """The revisions this code's migrations end at (read once: they change only with the code)."""
    return frozenset(_script().get_heads())


def current_heads(conn: Connection) -> set[str]:
    """The revisions recorded in the database (empty when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

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
