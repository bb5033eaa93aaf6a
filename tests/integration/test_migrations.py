"""Several projectors starting at once on an empty database: the migrations run once
and none of the starters fails (PostgreSQL and SQLite)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

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
