"""Migrations are the only way tables are made, and they match the models (`alembic check`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from tests.support.blankdb import blank_database
from tests.support.databases import BACKENDS
from tracker.dbschema import alembic_config


@pytest.mark.parametrize("kind", BACKENDS)
def test_upgrade_check_downgrade_upgrade(kind: str, tmp_path: Path) -> None:
    # a database of its own, so the session's test database stays migrated
    with blank_database(kind, tmp_path) as url:
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.check(config)  # raises when the models and the migrations disagree
        engine = create_engine(url)
        assert {"tasks", "task_events", "state_counts"} <= set(inspect(engine).get_table_names())
        command.downgrade(config, "base")
        assert "tasks" not in inspect(engine).get_table_names()
        command.upgrade(config, "head")
        engine.dispose()


def test_the_search_triggers_survive_every_later_migration(tmp_path: Path) -> None:
    """Rebuilding `tasks` in a batch (SQLite) drops 0002's triggers, and search goes quiet: a
    later migration adds its columns with plain ALTERs. Found when 0010 did rebuild it."""
    with blank_database("sqlite", tmp_path) as url:
        command.upgrade(alembic_config(url), "head")
        engine = create_engine(url)
        with engine.connect() as conn:
            names = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks'"
            ).scalars()
            assert {"tasks_fts_after_insert", "tasks_fts_after_delete"} <= set(names)
        engine.dispose()
