"""action idempotency ledger; runs' semantics version; cached action invocations

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LEDGER = "workflow_action_ledger"


def upgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.add_column(sa.Column("semantics_version", sa.Integer(), nullable=True))
    with op.batch_alter_table("workflow_action_invocations") as batch:
        batch.add_column(sa.Column("cached", sa.Boolean(), nullable=True))
    # A rebuild target keeps a ledger it already holds (rebuild never drops it), so
    # the table may be there before this revision is.
    if sa.inspect(op.get_bind()).has_table(LEDGER):
        return
    op.create_table(
        LEDGER,
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=500), nullable=False),
        sa.Column("lease_expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("step_path", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant", "action", "version", "idempotency_key", name=op.f("pk_" + LEDGER)
        ),
    )


def downgrade() -> None:
    op.drop_table(LEDGER)
    with op.batch_alter_table("workflow_action_invocations") as batch:
        batch.drop_column("cached")
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("semantics_version")
