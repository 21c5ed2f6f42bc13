"""Tasks, their events, and the per-state counters.

Reviewed by hand: the state_counts rows are seeded here, one per state, so that
lifecycle.set_state only ever UPDATEs them (no upsert needed on either database).

Revision ID: 0001
Revises:
Create Date: 2026-11-25 16:43:44.607691
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

STATES = (
    "queued",
    "submitting",
    "pending",
    "processing",
    "completed",
    "failed",
    "rejected",
    "timed_out",
)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "state_counts",
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("state"),
    )
    state_counts = sa.table(
        "state_counts", sa.column("state", sa.String), sa.column("count", sa.Integer)
    )
    op.bulk_insert(state_counts, [{"state": state, "count": 0} for state in STATES])
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upstream_id", sa.String(length=128), nullable=True),
        sa.Column("source_task_id", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("upstream_state", sa.String(length=32), nullable=True),
        sa.Column("user_prompt", sa.Text(), nullable=False),
        sa.Column("expand_prompt", sa.Boolean(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("image_end_url", sa.Text(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("video_url", sa.Text(), nullable=True),
        sa.Column("thumbnail_url", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("callback_token_hash", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_news_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quiet_polls", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("media_path", sa.Text(), nullable=True),
        sa.Column("thumbnail_path", sa.Text(), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archive_attempts", sa.Integer(), nullable=False),
        sa.Column("archive_error", sa.Text(), nullable=True),
        sa.Column("next_archive_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("callback_token_hash"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tasks_next_archive_at"), ["next_archive_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tasks_source_task_id"), ["source_task_id"], unique=False
        )
        batch_op.create_index("ix_tasks_state_id", ["state", "id"], unique=False)
        batch_op.create_index(
            "ix_tasks_state_next_check_at", ["state", "next_check_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tasks_submitted_at"), ["submitted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_upstream_id"), ["upstream_id"], unique=False)

    op.create_table(
        "task_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state_before", sa.String(length=16), nullable=True),
        sa.Column("state_after", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("task_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_task_events_task_id_fingerprint", ["task_id", "fingerprint"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("task_events", schema=None) as batch_op:
        batch_op.drop_index("ix_task_events_task_id_fingerprint")

    op.drop_table("task_events")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_upstream_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_submitted_at"))
        batch_op.drop_index("ix_tasks_state_next_check_at")
        batch_op.drop_index("ix_tasks_state_id")
        batch_op.drop_index(batch_op.f("ix_tasks_source_task_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_next_archive_at"))

    op.drop_table("tasks")
    op.drop_table("state_counts")
