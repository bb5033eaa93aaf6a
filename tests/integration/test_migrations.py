"""Migrations on PostgreSQL and SQLite: several projectors starting at once on an
empty database run them once and none fails; existing rows move with them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, inspect, select

from projections import db, migrate
from projections.tables import metadata
from tests.stack_fixture import StackHandle


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_migrations(stack: StackHandle, tmp_path: Path, backend: str) -> None:
    url = stack.postgres_url() if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(migrate.upgrade, url) for _ in range(4)]:
            future.result(timeout=60)
    engine = db.engine(url)
    try:
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _audit_row(
    audit_id: str, event_id: str | None, tenant: str | None, offset: int
) -> dict[str, object]:
    return {
        "audit_id": audit_id,
        "event_id": event_id,
        "tenant": tenant,
        "status": "unmatched",
        "delivery_count": 0,
        "audit_count": 1,
        "source_topic": "flowledger.audit.v1",
        "source_partition": 0,
        "source_offset": offset,
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_audit_rows_move_to_tenant_keys(stack: StackHandle, tmp_path: Path, backend: str) -> None:
    url = stack.postgres_url() if backend == "postgresql" else f"sqlite:///{tmp_path / 'a.db'}"
    migrate.upgrade(url, "0002")
    engine = db.engine(url)
    audit, deliveries = (
        Table("workflow_runtime_events", MetaData(), autoload_with=engine),
        Table("workflow_event_deliveries", MetaData(), autoload_with=engine),
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                audit.insert(),
                [
                    _audit_row("e1", "e1", "acme", 1),
                    _audit_row("ingress:flowledger.events.v1:0:7", None, None, 2),
                ],
            )
            conn.execute(
                deliveries.insert(),
                [
                    {
                        "audit_id": "e1",
                        "delivery_key": "signal:r1:w1",
                        "event_id": "e1",
                        "tenant": "acme",
                        "run_id": "r1",
                        "kind": "signal",
                        "outcome": "delivered",
                        "source_topic": "flowledger.audit.v1",
                        "source_partition": 0,
                        "source_offset": 1,
                    }
                ],
            )
        migrate.upgrade(url)
        with engine.connect() as conn:
            keys = sorted(conn.execute(select(audit.c.audit_id)).scalars())
            delivered = list(conn.execute(select(deliveries.c.audit_id)).scalars())
        assert keys == ["acme:e1", "ingress:flowledger.events.v1:0:7"]
        assert delivered == ["acme:e1"]
    finally:
        engine.dispose()
