"""Alembic, pointed at this code's migrations: the one way a schema is created or moved.

Why its own module: the CLI, `make run` (devrun), `db copy` and `/readyz` all need it;
kept out of tracker/cli/, none of them has to import the CLI (and the CLI none of them back).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # alembic is imported on use: most CLI commands never migrate
    from alembic.config import Config

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
