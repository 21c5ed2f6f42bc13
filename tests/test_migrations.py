"""Migrations are the only way tables are made, and they match the models (`alembic check`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

from tests.support.databases import TEST_DATABASE_URL, postgres_url
from tracker.migrate import alembic_config


def _fresh_urls(tmp_path: Path) -> list[str]:
    urls = [f"sqlite:///{tmp_path / 'migrations.db'}"]
    if TEST_DATABASE_URL:
        # a database of its own, so the session's test database stays migrated
        admin = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS tracker_migrations"))
            conn.execute(text("CREATE DATABASE tracker_migrations"))
        admin.dispose()
        urls.append(postgres_url().rsplit("/", 1)[0] + "/tracker_migrations")
    return urls


def test_upgrade_check_downgrade_upgrade(tmp_path: Path) -> None:
    for url in _fresh_urls(tmp_path):
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.check(config)  # raises when the models and the migrations disagree
        engine = create_engine(url)
        assert {"tasks", "task_events", "state_counts"} <= set(inspect(engine).get_table_names())
        command.downgrade(config, "base")
        assert "tasks" not in inspect(engine).get_table_names()
        command.upgrade(config, "head")
        engine.dispose()
