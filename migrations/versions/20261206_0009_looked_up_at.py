"""Reconciling from the list: when the account's generations were last searched for a task.

A create whose outcome is unknown (sent, no id in the answer) is looked for in Luma's
`GET /generations` by the callback URL it carried (`flows.imports.reconcile`). The time of
the last look, on the task, paces the looks across every worker (one list a task per
`RECONCILE_EVERY`, however many workers run) and needs no lock: a look that races another
only reads the list twice. NULL: never looked.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("looked_up_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("looked_up_at")
