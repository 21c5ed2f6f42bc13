"""A pool of upstream accounts: the `accounts` table keyed by account name, each task's
account, and each account's creates a day.

A task's account is pinned (`account_pinned`) when its submit named one, or its source's
account chose it: then it waits for that account and no other.

The one row there was (keyed by its dialect: the credit balance of the one account) becomes
account `default`, which is what `LUMA_API_KEY` alone still names; every existing task was
sent by that account. `paused_until` moves here from the process (shared by every worker);
`enabled`/`disabled_reason`/`disabled_at` say whether a refused key stopped the account.

The table is rebuilt (a new primary key): created anew, the row copied, the old one dropped.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts_by_name",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("upstream", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", WHEN, nullable=True),
        sa.Column("paused_until", WHEN, nullable=True),
        sa.Column("credit_balance", sa.BigInteger(), nullable=True),
        sa.Column("checked_at", WHEN, nullable=True),
        sa.Column("next_check_at", WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    # the row most recently read (there is at most one in practice: the proxy has no balance)
    op.execute(
        """
        INSERT INTO accounts_by_name
            (name, upstream, enabled, credit_balance, checked_at, next_check_at, last_error)
        SELECT 'default', upstream, true, credit_balance, checked_at, next_check_at, last_error
        FROM accounts ORDER BY checked_at IS NULL, checked_at DESC LIMIT 1
        """
    )
    op.drop_table("accounts")
    op.rename_table("accounts_by_name", "accounts")
    op.create_table(
        "account_days",
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("creates", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account", "day"),
    )
    # plain ALTERs, not a batch: rebuilding `tasks` on SQLite would drop 0002's search triggers
    op.add_column("tasks", sa.Column("account", sa.String(length=32), nullable=True))
    op.add_column(
        "tasks",
        sa.Column("account_pinned", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index("ix_tasks_account_state", "tasks", ["account", "state"])
    op.execute("UPDATE tasks SET account = 'default'")


def downgrade() -> None:
    op.drop_index("ix_tasks_account_state", table_name="tasks")
    op.drop_column("tasks", "account_pinned")  # SQLite 3.35+ drops a column in place
    op.drop_column("tasks", "account")
    op.drop_table("account_days")
    op.create_table(
        "accounts_by_dialect",
        sa.Column("upstream", sa.String(length=16), nullable=False),
        sa.Column("credit_balance", sa.BigInteger(), nullable=True),
        sa.Column("checked_at", WHEN, nullable=True),
        sa.Column("next_check_at", WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("upstream"),
    )
    op.execute(
        """
        INSERT INTO accounts_by_dialect
            (upstream, credit_balance, checked_at, next_check_at, last_error)
        SELECT upstream, credit_balance, checked_at, next_check_at, last_error
        FROM accounts WHERE name = 'default'
        """
    )
    op.drop_table("accounts")
    op.rename_table("accounts_by_dialect", "accounts")
