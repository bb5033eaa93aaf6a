"""The idempotency ledger of actions: the first successful result of an `action.call`
with an authored `idempotency_key`, per (tenant, action, version, key).

It is the one table a component writes directly (the worker, from the `run_action`
activity): it is not a projection of any topic, so a rebuild cannot reproduce it,
and verify leaves it alone. A row is first a lease (status RUNNING, a holder and an
expiry the holder renews while it runs the action), then the recorded result
(status SUCCEEDED). Every step is one conditional statement, so two workers racing
for a key never both believe they hold it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

LEDGER_TABLE = "workflow_action_ledger"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
SQLITE_BUSY_TIMEOUT_S = 60.0

# Apart from the projection tables' metadata on purpose: everything that walks
# those (verify, the projector's writes) never sees this table.
ledger_metadata = MetaData(
    naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_N_name)s"}
)

action_ledger = Table(
    LEDGER_TABLE,
    ledger_metadata,
    Column("tenant", String(200), primary_key=True),
    Column("action", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("idempotency_key", String(500), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("holder", String(500), nullable=False),
    # Epoch milliseconds: compared across workers and dialects without time zones.
    Column("lease_expires_ms", BigInteger, nullable=False),
    Column("output", JSON),
    Column("run_id", String(200)),
    Column("step_path", Text),
    Column("attempt", Integer),
    Column("created_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class LedgerKey:
    tenant: str
    action: str
    version: int
    idempotency_key: str

    def columns(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "action": self.action,
            "version": self.version,
            "idempotency_key": self.idempotency_key,
        }

    def where(self) -> Any:
        c = action_ledger.c
        return (
            (c.tenant == self.tenant)
            & (c.action == self.action)
            & (c.version == self.version)
            & (c.idempotency_key == self.idempotency_key)
        )


@dataclass(frozen=True)
class Claim:
    """What a claim found: the lease is ours (``held``), the result is recorded
    (``output``), or another holder has the key until ``busy_until_ms``."""

    held: bool = False
    output: dict[str, Any] | None = None
    busy_until_ms: int = 0
    busy_holder: str = ""


def now_ms() -> int:
    return int(time.time() * 1000)


def ledger_engine(url: str) -> Engine:
    """An engine for the ledger alone. SQLite without a pool: a connection opens the
    file by name each time, so a swapped-in database is the one written after a swap."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(
            url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}
        )
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True)


class ActionLedger:
    def __init__(self, engine: Engine, lease_ms: int) -> None:
        self.engine = engine
        self.lease_ms = lease_ms

    def _insert(self) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(action_ledger)
        return sqlite.insert(action_ledger)

    def claim(
        self, key: LedgerKey, holder: str, run_id: str, step_path: str, attempt: int
    ) -> Claim:
        """Take the key's lease, or learn its recorded result, or who holds it."""
        # A lease given up between two of these statements sends us round again.
        for _ in range(5):
            now = now_ms()
            lease = {
                "status": RUNNING,
                "holder": holder,
                "lease_expires_ms": now + self.lease_ms,
                "run_id": run_id,
                "step_path": step_path,
                "attempt": attempt,
            }
            with self.engine.begin() as conn:
                inserted = conn.execute(
                    self._insert()
                    .values(**key.columns(), created_at=datetime.now(UTC), **lease)
                    .on_conflict_do_nothing()
                )
            if inserted.rowcount == 1:
                return Claim(held=True)
            # An expired lease: its holder died or lost touch; the key is free again.
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(action_ledger)
                    .where(
                        key.where()
                        & (action_ledger.c.status == RUNNING)
                        & (action_ledger.c.lease_expires_ms <= now)
                    )
                    .values(**lease)
                )
            if taken.rowcount == 1:
                return Claim(held=True)
            with self.engine.connect() as conn:
                row = conn.execute(select(action_ledger).where(key.where())).mappings().first()
            if row is None:
                continue
            if row["status"] == SUCCEEDED:
                return Claim(output=dict(row["output"] or {}))
            return Claim(busy_until_ms=int(row["lease_expires_ms"]), busy_holder=row["holder"])
        return Claim(busy_until_ms=now_ms() + self.lease_ms)

    def renew(self, key: LedgerKey, holder: str) -> bool:
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(action_ledger)
                .where(
                    key.where()
                    & (action_ledger.c.status == RUNNING)
                    & (action_ledger.c.holder == holder)
                )
                .values(lease_expires_ms=now_ms() + self.lease_ms)
            )
        return renewed.rowcount == 1

    def record(self, key: LedgerKey, holder: str, output: dict[str, Any]) -> dict[str, Any]:
        """Record a success; returns the result the ledger keeps for the key, which is
        an earlier success if a holder that took over our expired lease beat us to it."""
        done = {"status": SUCCEEDED, "output": output, "completed_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            ours = conn.execute(
                update(action_ledger)
                .where(key.where() & (action_ledger.c.status == RUNNING))
                .values(holder=holder, **done)
            )
        if ours.rowcount == 1:
            return output
        with self.engine.begin() as conn:
            conn.execute(
                self._insert()
                .values(
                    **key.columns(),
                    holder=holder,
                    lease_expires_ms=0,
                    created_at=datetime.now(UTC),
                    **done,
                )
                .on_conflict_do_nothing()
            )
            row = conn.execute(select(action_ledger.c.output).where(key.where())).first()
        return dict(row[0] or {}) if row is not None else output

    def release(self, key: LedgerKey, holder: str) -> None:
        """Give the key up after a failure, so that the next attempt runs at once."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(action_ledger).where(
                    key.where()
                    & (action_ledger.c.status == RUNNING)
                    & (action_ledger.c.holder == holder)
                )
            )

    def close(self) -> None:
        self.engine.dispose()
