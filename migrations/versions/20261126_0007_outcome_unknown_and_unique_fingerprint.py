"""An explicit "outcome unknown" flag, and one event per (task, fingerprint).

- `tasks.outcome_unknown`: a rejected task whose create may or may not have happened was
  told apart by the prefix "outcome unknown" of its failure_reason. Existing rows with that
  prefix get the flag; the text people read stays as it is.
- The callback path de-duplicated events with a SELECT before each INSERT; it now inserts
  with ON CONFLICT DO NOTHING, which needs a unique index. Fingerprints are kept only on
  upstream inputs (callbacks, polls) from now on; any duplicates already stored (a resend
  refused twice in the same words, say) keep the fingerprint on their first row only.
  NULL fingerprints never collide.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_task_events_task_id_fingerprint"


def upgrade() -> None:
    # a plain ADD COLUMN on both databases: a batch (copy-and-move) would drop SQLite's search
    # triggers (migration 0002)
    op.add_column(
        "tasks",
        sa.Column("outcome_unknown", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.execute(
        "UPDATE tasks SET outcome_unknown = TRUE "
        "WHERE state = 'rejected' AND failure_reason LIKE 'outcome unknown%'"
    )
    op.execute(
        "UPDATE task_events SET fingerprint = NULL WHERE fingerprint IS NOT NULL AND id > ("
        "SELECT MIN(first.id) FROM task_events AS first "
        "WHERE first.task_id = task_events.task_id AND first.fingerprint = task_events.fingerprint)"
    )
    op.drop_index(INDEX, table_name="task_events")
    op.create_index(INDEX, "task_events", ["task_id", "fingerprint"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="task_events")
    op.create_index(INDEX, "task_events", ["task_id", "fingerprint"], unique=False)
    op.drop_column("tasks", "outcome_unknown")  # SQLite 3.35+ drops a column in place
