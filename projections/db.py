"""Engines for the projection database. SQLite gets the settings that make it a fair
multi-process store: WAL (readers never block the projector), a busy timeout, and
``BEGIN IMMEDIATE`` so two writers queue up instead of failing on lock upgrade."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from flowledger import retry
from flowledger.errors import ServiceUnavailable
from projections import db_auth
from projections.codes import DATABASE_UNAVAILABLE

SQLITE_BUSY_TIMEOUT_S = 60.0
# Execution option of connections that only read: on SQLite they begin a plain
# (deferred) transaction instead of taking the write lock up front.
READ_ONLY = "flowledger_read_only"
SQLITE_CACHE_KIB = 256 * 1024


def read_connection(eng: Engine) -> Connection:
    """A connection for reading only (see READ_ONLY); use it as a context manager."""
    conn = eng.connect()
    conn.execution_options(**{READ_ONLY: True})
    return conn


def engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 is the driver this project ships with; a bare postgresql:// URL
        # would otherwise ask for psycopg2.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    eng = create_engine(url, pool_pre_ping=True, **kwargs)
    event.listen(eng, "handle_error", db_auth.refuse_on_auth_failure)
    return eng


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    eng = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(eng, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is replaced by the one below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        # The projector rewrites rows all over the run, step and wait indexes; with
        # the default 2 MiB page cache most of a batch's time went to re-reading pages.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(eng, "begin")
    def _on_begin(conn: Any) -> None:
        # A reader must not queue behind the projector's write lock for a whole batch
        # (WAL gives it a snapshot without any lock), so it may opt out.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return eng


def _enable_wal(cursor: Any) -> None:
    """WAL is a property of the file, so only the first connection ever switches it.
    That switch needs the file to itself, and SQLite answers "locked" at once instead
    of calling the busy handler when several connections open a new file together, so
    the switch is retried here under the same busy deadline. (An in-memory database
    answers "memory" and stays so.)"""

    def switch() -> None:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")

    retry.until_deadline(
        switch,
        transient=lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc),
        seconds=SQLITE_BUSY_TIMEOUT_S,
        initial=0.01,
        cap=0.1,
    )


@contextmanager
def database_errors() -> Iterator[None]:
    """A missing or unreachable database becomes a clear refusal, not a traceback."""
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        raise ServiceUnavailable(
            f"cannot read the projection database: {str(exc.orig).strip()}",
            code=DATABASE_UNAVAILABLE,
            hint="start `flowledger projector` once to create the tables",
        ) from exc


@contextmanager
def reading(url: str) -> Iterator[Connection]:
    """A connection for the read side, with database_errors() mapping."""
    eng = engine(url)
    try:
        with database_errors(), eng.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            yield conn
    finally:
        eng.dispose()
