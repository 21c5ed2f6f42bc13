"""Progress: how far along the upstream says a task is, and its own wait estimate.

Both nullable (most upstreams give neither). Plain ADD COLUMN on both databases, so
SQLite keeps the table (and migration 0002's FTS triggers on it) as it is.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("progress", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("estimate_wait_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "estimate_wait_seconds")
    op.drop_column("tasks", "progress")
