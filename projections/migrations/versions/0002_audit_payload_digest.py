"""audit payload digest

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_runtime_events") as batch:
        batch.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("payload_bytes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("payload_excerpt", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_runtime_events") as batch:
        batch.drop_column("payload_excerpt")
        batch.drop_column("payload_bytes")
        batch.drop_column("payload_sha256")
