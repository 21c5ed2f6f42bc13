"""The dialect each task was sent with, and the upstream account's credit balance.

- tasks.upstream: "proxy" or "luma" (LUMA_API_FLAVOR when the task was made). Every task
  made before this migration went to the proxy, hence the server default. The index
  (upstream, state) lets the dashboard count the other dialect's unfinished tasks
  without reading the table.
- accounts: one row per dialect with a balance (Luma's `GET /credits`), written by the
  worker at most once a minute and read by the web.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("upstream", sa.String(length=16), nullable=False, server_default="proxy"),
    )
    op.create_index("ix_tasks_upstream_state", "tasks", ["upstream", "state"], unique=False)
    op.create_table(
        "accounts",
        sa.Column("upstream", sa.String(length=16), nullable=False),
        sa.Column("credit_balance", sa.BigInteger(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("upstream"),
    )


def downgrade() -> None:
    op.drop_table("accounts")
    op.drop_index("ix_tasks_upstream_state", table_name="tasks")
    # plain ALTER (SQLite 3.35+ and PostgreSQL): a batch copy would drop the search triggers
    op.execute("ALTER TABLE tasks DROP COLUMN upstream")
