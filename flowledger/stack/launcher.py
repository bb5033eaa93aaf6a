"""`stack up|down|status`: start (or attach to) Kafka, Temporal and the database,
wait until each answers a real client call, and record what was done in stack.json."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowledger.errors import FlowledgerError, StackError
from flowledger.settings import Settings
from flowledger.stack import database, kafka, processes, state, temporal
from flowledger.stack.state import ServiceState, StackState

SERVICES = ("kafka", "temporal", "database")


def _probe(service: ServiceState, settings: Settings) -> bool:
    if service.name == "kafka":
        return kafka.probe(service.endpoint)
    if service.name == "temporal":
        return temporal.probe(service.endpoint, settings.temporal.namespace)
    return database.probe(service.endpoint)


def _await_ready(
    services: list[ServiceState], settings: Settings, started: float
) -> dict[str, float]:
    deadline = started + settings.stack.ready_timeout_s
    ready: dict[str, float] = {}
    pending = list(services)
    with ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
        while pending:
            for service in pending:
                if service.mode == "managed" and service.pid and not processes.alive(service.pid):
                    raise StackError(
                        f"{service.name} exited during start-up",
                        code="STACK_SERVICE_EXITED",
                        service=service.name,
                        log_tail=processes.tail(Path(service.log) if service.log else None),
                    )
            # Probed side by side: one slow service must not delay noticing the others.
            answers = list(pool.map(lambda s: _probe(s, settings), pending))
            for service, ok in zip(list(pending), answers, strict=True):
                if ok:
                    ready[service.name] = round(time.monotonic() - started, 2)
                    pending.remove(service)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                first = pending[0]
                raise StackError(
                    f"{names} not ready within {settings.stack.ready_timeout_s:.0f}s",
                    code="STACK_NOT_READY",
                    service=first.name,
                    log_tail=processes.tail(Path(first.log) if first.log else None),
                )
            if pending:
                time.sleep(0.1)
    return ready


def _stop_service(service: ServiceState) -> None:
    if service.mode != "managed":
        return
    if service.details.get("kind") == "postgresql":
        database.stop_postgres(service)
    else:
        processes.stop(service.pid)


def _matches(
    current: StackState, kafka_bootstrap: str | None, temporal_address: str | None, choice: str
) -> bool:
    """Whether a running stack is the one being asked for, so `up` can be a no-op."""
    services = current.services
    if set(services) != set(SERVICES):
        return False
    for name, attach in (("kafka", kafka_bootstrap), ("temporal", temporal_address)):
        service = services[name]
        if attach and (service.mode != "attached" or service.endpoint != attach):
            return False
        if not attach and (service.mode != "managed" or not processes.alive(service.pid)):
            return False
    db = services["database"]
    kind = db.details.get("kind")
    if choice == "sqlite":
        return kind == "sqlite"
    if choice in ("postgres", "postgresql"):
        return kind == "postgresql" and db.mode == "managed" and processes.alive(db.pid)
    return db.mode == "attached" and db.endpoint == choice


def up(
    settings: Settings,
    *,
    kafka_bootstrap: str | None = None,
    temporal_address: str | None = None,
    database_choice: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> StackState:
    """Start or attach to every service; on any failure stop what was started."""
    state_dir = settings.stack.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    choice = database_choice or settings.database.url or "sqlite"
    current = state.load(state_dir)
    if (
        current is not None
        and _matches(current, kafka_bootstrap, temporal_address, choice)
        and all(_probe(s, settings) for s in current.services.values())
    ):
        return current
    if current is not None:
        down(settings)
    note = progress or (lambda _msg: None)
    started = time.monotonic()
    launched: list[ServiceState] = []
    try:
        if kafka_bootstrap:
            launched.append(ServiceState(name="kafka", endpoint=kafka_bootstrap, mode="attached"))
        else:
            note("starting Apache Kafka (KRaft)")
            launched.append(kafka.start(settings.stack, state_dir))
        if temporal_address:
            launched.append(
                ServiceState(name="temporal", endpoint=temporal_address, mode="attached")
            )
        else:
            note("starting Temporal dev server")
            launched.append(temporal.start(settings.stack, state_dir))
        if choice == "sqlite":
            launched.append(database.sqlite(state_dir))
        elif choice in ("postgres", "postgresql"):
            note("starting PostgreSQL")
            launched.append(database.start_postgres(settings.stack, state_dir))
        else:
            launched.append(database.attached(choice))
        note("waiting for services to answer")
        ready = _await_ready(launched, settings, started)
    except BaseException as exc:
        for service in reversed(launched):
            _stop_service(service)
        state.remove(state_dir)
        if isinstance(exc, FlowledgerError):
            raise
        if isinstance(exc, Exception):
            raise StackError(f"stack up failed: {exc}") from exc
        raise
    result = StackState(
        state_dir=str(state_dir),
        services={s.name: s for s in launched},
        started_at=datetime.now(UTC).isoformat(),
        ready_seconds=ready,
    )
    state.save(result)
    return result


def down(settings: Settings) -> StackState | None:
    """Stop everything `up` started; idempotent."""
    state_dir = settings.stack.state_dir.resolve()
    current = state.load(state_dir)
    if current is None:
        return None
    for name in reversed(SERVICES):
        service = current.services.get(name)
        if service is not None:
            _stop_service(service)
    state.remove(state_dir)
    return current


def status(settings: Settings, *, check: bool = True) -> dict[str, Any]:
    state_dir = settings.stack.state_dir.resolve()
    current = state.load(state_dir)
    services: dict[str, Any] = {}
    for name in SERVICES:
        service = current.services.get(name) if current else None
        if service is None:
            services[name] = {"state": "down", "endpoint": None}
            continue
        if service.mode == "managed" and service.pid and not processes.alive(service.pid):
            condition = "down"
        elif check:
            condition = "up" if _probe(service, settings) else "unreachable"
        else:
            condition = "up"
        services[name] = {
            "state": condition,
            "endpoint": service.endpoint,
            "mode": service.mode,
            "pid": service.pid,
            "log": service.log,
        }
    return {"services": services, "state_dir": str(state_dir)}


def settings_for(settings: Settings, current: StackState) -> Settings:
    """The same settings, pointed at the services of a running stack."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"bootstrap_servers": current.services["kafka"].endpoint}
            ),
            "temporal": settings.temporal.model_copy(
                update={"address": current.services["temporal"].endpoint}
            ),
            "database": settings.database.model_copy(
                update={"url": current.services["database"].endpoint}
            ),
        }
    )
