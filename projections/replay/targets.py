"""Where a rebuild goes: `--into URL`, or `--shadow` beside the live database (a
sibling SQLite file, or the `flowledger_shadow` schema of the same PostgreSQL
database), and how a verified shadow becomes live."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import make_url, text

from flowledger.errors import FlowledgerError
from projections import db
from projections.codes import REPLAY_SHADOW_UNSUPPORTED
from workflows.actions.ledger import LEDGER_TABLE, action_ledger

SHADOW_SCHEMA = "flowledger_shadow"


def shadow_url(live_url: str) -> str:
    url = make_url(live_url)
    if url.get_backend_name() == "sqlite":
        live = Path(url.database or "")
        return f"sqlite:///{live.with_name(live.stem + '.shadow' + live.suffix)}"
    if url.get_backend_name() == "postgresql":
        # Unqualified names (every table, alembic's too) land in the shadow schema.
        with db.engine(live_url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SHADOW_SCHEMA}"'))
        return url.update_query_dict(
            {"options": f"-csearch_path={SHADOW_SCHEMA}"}
        ).render_as_string(hide_password=False)
    raise FlowledgerError(
        f"no shadow for {url.get_backend_name()} databases", code=REPLAY_SHADOW_UNSUPPORTED
    )


def swap(live_url: str, shadow: str) -> dict[str, str]:
    """Make the shadow live. PostgreSQL: both schema renames in one transaction.
    SQLite: file renames; the projector must be stopped (the caller checks the cut)."""
    url = make_url(live_url)
    stamp = time.strftime("%Y%m%d%H%M%S")
    if url.get_backend_name() == "postgresql":
        retired = f"flowledger_retired_{stamp}"
        with db.engine(live_url).begin() as conn:
            # The ledger table itself moves (same table, so a write waiting on its
            # lock lands in the live one after the swap); the shadow's is empty.
            if conn.execute(text(f"SELECT to_regclass('public.{LEDGER_TABLE}')")).scalar():
                conn.execute(text(f'DROP TABLE IF EXISTS "{SHADOW_SCHEMA}"."{LEDGER_TABLE}"'))
                conn.execute(
                    text(f'ALTER TABLE public."{LEDGER_TABLE}" SET SCHEMA "{SHADOW_SCHEMA}"')
                )
            conn.execute(text(f'ALTER SCHEMA public RENAME TO "{retired}"'))
            conn.execute(text(f'ALTER SCHEMA "{SHADOW_SCHEMA}" RENAME TO public'))
        return {"live": "public", "retired": retired}
    live = Path(url.database or "")
    shadow_file = Path(make_url(shadow).database or "")
    retired_file = live.with_name(f"{live.stem}.retired-{stamp}{live.suffix}")
    _carry_ledger(live, shadow_file)
    for base in (live, shadow_file):
        # Fold each write-ahead log into its database first: a WAL left beside a
        # renamed file would be replayed into the wrong one.
        # Outside any transaction, which the checkpoint needs.
        raw = sqlite3.connect(base, isolation_level=None)
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
        for suffix in ("-wal", "-shm"):
            extra = base.with_name(base.name + suffix)
            if extra.exists() and extra.stat().st_size == 0:
                extra.unlink()
    os.replace(live, retired_file)
    os.replace(shadow_file, live)
    return {"live": str(live), "retired": str(retired_file)}


def _carry_ledger(live: Path, shadow_file: Path) -> None:
    """Copy the action ledger into the shadow under the live file's write lock: it is
    no projection, so the rebuilt file has none of its rows. (The worker opens the
    file by name for every ledger statement, so it writes the new file after the
    rename; a statement already past the lock may still land in the retired one, which
    costs at most one more execution of that action.)"""
    raw = sqlite3.connect(live, isolation_level=None, timeout=db.SQLITE_BUSY_TIMEOUT_S)
    try:
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        if LEDGER_TABLE not in tables:
            return
        raw.execute("ATTACH DATABASE ? AS shadow", (str(shadow_file),))
        raw.execute("BEGIN IMMEDIATE")
        columns = ", ".join(f'"{c.name}"' for c in action_ledger.columns)
        raw.execute(f'DELETE FROM shadow."{LEDGER_TABLE}"')
        raw.execute(
            f'INSERT INTO shadow."{LEDGER_TABLE}" ({columns}) '
            f'SELECT {columns} FROM main."{LEDGER_TABLE}"'
        )
        raw.execute("COMMIT")
        raw.execute("DETACH DATABASE shadow")
    finally:
        raw.close()
