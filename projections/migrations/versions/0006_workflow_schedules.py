"""workflow_schedules: the Temporal Schedules of the published definitions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_schedules",
        sa.Column("schedule_id", sa.String(length=632), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("definition_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=True),
        sa.Column("overlap", sa.String(length=32), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_event_type", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_topic", sa.String(length=200), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("source_event_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("schedule_id", name=op.f("pk_workflow_schedules")),
    )
    op.create_index(
        op.f("ix_workflow_schedules_tenant_definition_id"),
        "workflow_schedules",
        ["tenant", "definition_id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_workflow_schedules_tenant_definition_id"), table_name="workflow_schedules"
    )
    op.drop_table("workflow_schedules")
