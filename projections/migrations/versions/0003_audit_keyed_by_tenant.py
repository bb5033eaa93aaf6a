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


def _rekey(to_tenant_key: bool) -> None:
    # Rows keyed by their bare event id become tenant:event_id (and back); rows named
    # by their ingress coordinates (records that had no id) keep their key.
    for name in TABLES:
        table = sa.table(
            name,
            sa.column("audit_id", sa.String),
            sa.column("event_id", sa.String),
            sa.column("tenant", sa.String),
        )
        tenant_key = sa.func.coalesce(table.c.tenant, "") + ":" + table.c.event_id
        old, new = (
            (table.c.event_id, tenant_key) if to_tenant_key else (tenant_key, table.c.event_id)
        )
        op.execute(
            table.update()
            .where(table.c.event_id.is_not(None), table.c.audit_id == old)
            .values(audit_id=new)
        )


def upgrade() -> None:
    _rekey(to_tenant_key=True)


def downgrade() -> None:
    # Only possible while no two tenants share an id; the primary key refuses otherwise.
    _rekey(to_tenant_key=False)
