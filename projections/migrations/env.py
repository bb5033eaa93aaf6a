"""Alembic environment. projections.migrate hands over an open connection in
``config.attributes["connection"]``; there is no alembic.ini, so the package works the
same installed or from a checkout."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from projections.migrate import MIGRATED


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=list(MIGRATED),
        # SQLite alters tables by copy-and-move; batch mode makes later migrations
        # portable without per-dialect branches.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from projections.db import engine

        with engine(context.config.get_main_option("sqlalchemy.url") or "").connect() as conn:
            _run(conn)
        return
    _run(connection)


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
_main()
