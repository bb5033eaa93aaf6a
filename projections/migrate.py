"""Create or upgrade the projection tables: ``upgrade(url)`` runs the Alembic migrations
shipped inside this package, with no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, text

from projections.db import engine as make_engine
from projections.tables import metadata
from workflows.actions.ledger import LEDGER_TABLE, ledger_metadata

MIGRATIONS = Path(__file__).with_name("migrations")
# What the migrations create: the projection tables, and the action ledger, which
# the worker writes directly and no rebuild, verify or reset touches.
MIGRATED: tuple[MetaData, ...] = (metadata, ledger_metadata)
KEPT_BY_REBUILD = frozenset({LEDGER_TABLE})
MIGRATION_LOCK = 0x666C6F77  # any constant shared by every flowledger process


def config(url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    eng = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    cfg = config()
    with eng.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several projectors may start at once on an empty database: one migrates,
            # the others wait here and then find nothing left to do. (On SQLite the
            # write transaction itself serialises them.)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if isinstance(url_or_engine, str):
        eng.dispose()
