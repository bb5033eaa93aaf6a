"""The real services for integration tests: one stack per test session, started by
the same launcher as `flowledger stack up`, failing (never skipping) when it cannot."""

from __future__ import annotations

import asyncio
import gc
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from flowledger.errors import StackError
from flowledger.settings import Settings
from flowledger.stack import database, launcher
from flowledger.stack.state import ServiceState, StackState

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".flowledger" / "cache"


@dataclass
class StackHandle:
    settings: Settings
    state: StackState
    root: Path
    _postgres: ServiceState | None = None
    _databases: list[str] = field(default_factory=list)

    def postgres_url(self) -> str:
        """A fresh, empty PostgreSQL database on the session's private cluster."""
        if self._postgres is None:
            if self.settings.database.url.startswith("postgresql"):
                self._postgres = database.attached(self.settings.database.url)
            else:
                try:
                    self._postgres = database.start_postgres(
                        self.settings.stack, self.root / "pg-cluster"
                    )
                except StackError as exc:
                    pytest.fail(f"PostgreSQL could not start: {exc} {exc.context}")
        base = self._postgres.endpoint
        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'create database "{name}"'))
        finally:
            admin.dispose()
        self._databases.append(name)
        return base.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        # Kafka clients left for the garbage collector would log reconnect failures
        # once the broker is gone; destroy them while it is still up.
        gc.collect()
        if self._postgres is not None and self._postgres.mode == "managed":
            database.stop_postgres(self._postgres)
        launcher.down(self.settings)


def start(root: Path, kafka: str | None, temporal: str | None, db: str | None) -> StackHandle:
    base = Settings(
        stack={"state_dir": root / "stack", "cache_dir": CACHE, "ready_timeout_s": 120},
    )
    try:
        state = launcher.up(
            base, kafka_bootstrap=kafka, temporal_address=temporal, database_choice=db
        )
    except StackError as exc:
        tail = exc.context.get("log_tail", "")
        pytest.fail(f"the test stack could not start: {exc}\n{tail}", pytrace=False)
    settings = launcher.settings_for(base, state)
    if temporal is not None:
        # An attached Temporal may lack flowledger's search attributes, which every
        # start names (the stack's own dev server registers them as it starts).
        from workflows import visibility_admin

        reports = asyncio.run(visibility_admin.ensure(settings))
        if not all(r.ok for r in reports):
            pytest.fail(f"search attributes on {temporal}: {reports}", pytrace=False)
    return StackHandle(settings=settings, state=state, root=root)


def isolated(handle: StackHandle, tmp_path: Path) -> Settings:
    """Settings of one test: its own topics, groups, task queue and database file."""
    tag = uuid.uuid4().hex[:10]
    base = handle.settings
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={"topic_prefix": f"t{tag}.", "client_id": f"flowledger-test-{tag}"}
            ),
            "temporal": base.temporal.model_copy(update={"task_queue": f"flowledger-{tag}"}),
            "database": base.database.model_copy(
                update={"url": f"sqlite:///{(tmp_path / 'projections.db').resolve()}"}
            ),
            "processor": base.processor.model_copy(update={"group_id": f"processor-{tag}"}),
            "projector": base.projector.model_copy(update={"group_id": f"projector-{tag}"}),
            "stack": base.stack.model_copy(update={"state_dir": tmp_path / "state"}),
        }
    )
