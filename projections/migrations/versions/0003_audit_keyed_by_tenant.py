"""audit keyed by tenant

Event ids are unique only within a tenant: the audit's key becomes tenant:event_id,
so two tenants that use the same id keep one row each.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("workflow_runtime_events", "workflow_event_deliveries")


def upgrade() -> None:
    # Rows keyed by their bare event id become tenant:event_id; rows named by their
    # ingress coordinates (records that had no id) keep their key.
    for name in TABLES:
        table = sa.table(
            name,
            sa.column("audit_id", sa.String),
            sa.column("event_id", sa.String),
            sa.column("tenant", sa.String),
        )
        op.execute(
            table.update()
            .where(table.c.event_id.is_not(None), table.c.audit_id == table.c.event_id)
            .values(audit_id=sa.func.coalesce(table.c.tenant, "") + ":" + table.c.event_id)
        )


def downgrade() -> None:
    # Only possible while no two tenants share an id; the primary key refuses otherwise.
    for name in TABLES:
        table = sa.table(
            name,
            sa.column("audit_id", sa.String),
            sa.column("event_id", sa.String),
            sa.column("tenant", sa.String),
        )
        op.execute(
            table.update()
            .where(
                table.c.event_id.is_not(None),
                table.c.audit_id == sa.func.coalesce(table.c.tenant, "") + ":" + table.c.event_id,
            )
            .values(audit_id=table.c.event_id)
        )
