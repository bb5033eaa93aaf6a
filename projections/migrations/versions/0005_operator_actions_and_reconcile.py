"""operator actions; the reset marker of a run

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.add_column(sa.Column("reset_execution_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("reset_through_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "workflow_operator_actions",
        sa.Column("action_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.String(length=200), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("source_topic", sa.String(length=200), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("source_event_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("action_id", name=op.f("pk_workflow_operator_actions")),
    )
    op.create_index(
        op.f("ix_workflow_operator_actions_tenant_requested_at"),
        "workflow_operator_actions",
        ["tenant", "requested_at"],
    )
    op.create_index(
        op.f("ix_workflow_operator_actions_run_id"), "workflow_operator_actions", ["run_id"]
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_workflow_operator_actions_run_id"), table_name="workflow_operator_actions"
    )
    op.drop_index(
        op.f("ix_workflow_operator_actions_tenant_requested_at"),
        table_name="workflow_operator_actions",
    )
    op.drop_table("workflow_operator_actions")
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("reset_through_seq")
        batch.drop_column("reset_execution_id")
