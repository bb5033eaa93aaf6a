"""`stack up|down|status|restart`: start (or attach to) Kafka, Temporal and the
database, wait until each answers a real client call, and record what was done in
stack.json. A service keeps its ports and data for the life of the state directory:
restarting it, or starting it again after it died, never moves it under the clients
connected to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowledger.codes import (
    STACK_NOT_READY,
    STACK_NOT_RUNNING,
    STACK_RUNNING_OTHERWISE,
    STACK_SERVICE_ATTACHED,
    STACK_SERVICE_EXITED,
    STACK_SERVICE_UNKNOWN,
)
from flowledger.errors import (
    AuthenticationFailed,
    FlowledgerError,
    InvalidInput,
    ServiceUnavailable,
    StackError,
)
from flowledger.settings import Settings, redact_url
from flowledger.stack import attached, database, kafka, processes, state, temporal
from flowledger.stack.state import ServiceState, StackState

SERVICES = ("kafka", "temporal", "database")


def _pids(service: ServiceState) -> list[int | None]:
    """The processes of a managed service: one, or one per node of a Kafka cluster."""
    if service.name == "kafka":
        return [node.get("pid") for node in kafka.nodes(service)]
    return [service.pid]


def _probe(service: ServiceState, settings: Settings) -> bool:
    if service.mode == "attached":
        return attached.probe(service, settings)
    if service.name == "kafka":
        # Ready once every node answers on its own address and sees the whole
        # cluster: topics are created with a replica on each broker, and a node
        # that was just restarted is not back while the others still list it.
        members = kafka.nodes(service)
        return all(kafka.probe(n["endpoint"], brokers=len(members)) for n in members)
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
                if service.mode == "managed" and not all(
                    processes.alive(pid) for pid in _pids(service) if pid
                ):
                    raise StackError(
                        f"{service.name} exited during start-up",
                        code=STACK_SERVICE_EXITED,
                        retryable=True,
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
                    code=STACK_NOT_READY,
                    retryable=True,
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
        for pid in _pids(service):
            processes.stop(pid)


def _running(service: ServiceState) -> bool:
    """Usable as it is: someone else's service, a file, or live processes of ours (every
    node of a cluster: `up` starts the dead ones again)."""
    return (
        service.mode == "attached"
        or service.pid is None
        or all(processes.alive(pid) for pid in _pids(service))
    )


@dataclass(frozen=True)
class Ask:
    """What `up` was asked for: attach to these, or start our own."""

    kafka: str | None
    temporal: str | None
    database: str  # 'sqlite', 'postgres' or a URL
    # Brokers of our own Kafka, when asked for explicitly.
    kafka_brokers: int | None = None

    def attach(self, name: str) -> str | None:
        if name == "kafka":
            return self.kafka
        if name == "temporal":
            return self.temporal
        return None if self.database in ("sqlite", "postgres", "postgresql") else self.database

    def wants(self, service: ServiceState) -> bool:
        """Whether a recorded service (alive or not) is the one asked for."""
        if service.name == "database":
            kind = service.details.get("kind")
            if self.database == "sqlite":
                return kind == "sqlite"
            if self.database in ("postgres", "postgresql"):
                return kind == "postgresql" and service.mode == "managed"
            # The URL named, or the stack's own database as later commands see it.
            return service.endpoint == self.database
        attach = self.attach(service.name)
        if (
            service.name == "kafka"
            and self.kafka_brokers is not None
            and not attach
            and service.mode == "managed"
            and len(kafka.nodes(service)) != self.kafka_brokers
        ):
            return False
        # No address given means "the stack's own", whichever it is: `up` after
        # `stack up --kafka …` keeps the attached broker rather than starting one.
        return not attach or (service.mode == "attached" and service.endpoint == attach)


def _start_own(
    name: str,
    settings: Settings,
    state_dir: Path,
    previous: ServiceState | None,
    note: Callable[[str], None],
) -> ServiceState:
    """Start our own Kafka, Temporal or PostgreSQL; with `previous` (its dead or
    stopped predecessor) on the same ports with the same data."""
    if name == "kafka":
        note("starting Apache Kafka (KRaft)")
        return kafka.start(settings.stack, state_dir, previous)
    if name == "temporal":
        note("starting Temporal dev server")
        return temporal.start(settings.stack, state_dir, previous)
    note("starting PostgreSQL")
    return database.start_postgres(settings.stack, state_dir, previous)


def _launch(
    name: str,
    settings: Settings,
    state_dir: Path,
    ask: Ask,
    previous: ServiceState | None,
    note: Callable[[str], None],
) -> ServiceState:
    """Start (or attach to) one service that is not running; `previous` is the
    recorded one it replaces, asked for again."""
    if previous is not None and previous.mode == "managed":
        return _start_own(name, settings, state_dir, previous, note)
    attach = ask.attach(name)
    if attach:
        if name == "database":
            return database.attached(attach)
        return ServiceState(name=name, endpoint=attach, mode="attached")
    if name == "database" and ask.database == "sqlite":
        return database.sqlite(state_dir)
    return _start_own(name, settings, state_dir, None, note)


def sort_out(
    current: StackState | None, ask: Ask, state_dir: Path
) -> tuple[dict[str, ServiceState], dict[str, ServiceState]]:
    """The recorded services to keep as they are, and the dead ones to start again
    in their place."""
    kept: dict[str, ServiceState] = {}
    dead: dict[str, ServiceState] = {}
    for name, service in (current.services if current else {}).items():
        if name not in SERVICES:
            continue
        if ask.wants(service):
            (kept if _running(service) else dead)[name] = service
        elif service.mode == "managed" and _running(service):
            # Replacing it would move it under everything connected to it.
            raise StackError(
                f"{name} runs under {state_dir} in another configuration than the one "
                "asked for; stop the stack first (`flowledger down`)",
                code=STACK_RUNNING_OTHERWISE,
                service=name,
                endpoint=service.endpoint,
            )
    return kept, dead


def up(
    settings: Settings,
    *,
    kafka_bootstrap: str | None = None,
    temporal_address: str | None = None,
    database_choice: str | None = None,
    kafka_brokers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> StackState:
    """Start or attach to every service that is not running; running ones stay where
    they are, and a dead one (or a dead node of our Kafka cluster) comes back on its
    recorded ports with its data. On any failure stop what this call started."""
    state_dir = settings.stack.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    ask = Ask(
        kafka_bootstrap,
        temporal_address,
        database_choice or settings.database.url or "sqlite",
        kafka_brokers,
    )
    if kafka_brokers is not None:
        settings = settings.model_copy(
            update={"stack": settings.stack.model_copy(update={"kafka_brokers": kafka_brokers})}
        )
    current = state.load(state_dir)
    kept, dead = sort_out(current, ask, state_dir)
    note = progress or (lambda _msg: None)
    began = time.monotonic()
    launched: list[ServiceState] = []
    try:
        for name in SERVICES:
            if name not in kept:
                launched.append(_launch(name, settings, state_dir, ask, dead.get(name), note))
        note("waiting for services to answer")
        ready = _await_ready([*kept.values(), *launched], settings, began)
    except BaseException as exc:
        for service in reversed(launched):
            _stop_service(service)
        if current is not None and (kept or dead):
            # The ports stay on record, so the next attempt takes the same ones.
            current.services.update({s.name: s for s in launched})
            state.save(current)
        else:
            state.remove(state_dir)
        if isinstance(exc, FlowledgerError):
            raise
        if isinstance(exc, Exception):
            raise StackError(f"stack up failed: {exc}") from exc
        raise
    services = {**kept, **{s.name: s for s in launched}}
    result = StackState(
        state_dir=str(state_dir),
        services={name: services[name] for name in SERVICES},
        started_at=(current.started_at if current and kept else None)
        or datetime.now(UTC).isoformat(),
        ready_seconds={
            **(current.ready_seconds if current and kept else {}),
            **{name: s for name, s in ready.items() if name not in kept},
        },
    )
    state.save(result)
    return result


def restart(
    settings: Settings, name: str, progress: Callable[[str], None] | None = None
) -> StackState:
    """Stop one managed service (if it still runs) and start it again on the same
    ports with the same data: whatever is connected to it reconnects to the address
    it knows."""
    if name not in SERVICES:
        raise InvalidInput(
            f"unknown service {name!r}; one of {', '.join(SERVICES)}",
            code=STACK_SERVICE_UNKNOWN,
            service=name,
        )
    state_dir = settings.stack.state_dir.resolve()
    current = state.load(state_dir)
    service = current.services.get(name) if current else None
    if current is None or service is None:
        raise ServiceUnavailable(
            f"no stack is recorded under {state_dir}; start it with `flowledger up`",
            code=STACK_NOT_RUNNING,
            service=name,
        )
    if service.mode == "attached":
        raise InvalidInput(
            f"{name} at {service.endpoint} is attached, not started by this stack",
            code=STACK_SERVICE_ATTACHED,
            service=name,
        )
    if service.details.get("kind") == "sqlite":
        # A file that every component opens itself: nothing runs to restart.
        return current
    note = progress or (lambda _msg: None)
    note(f"stopping {name}")
    _stop_service(service)
    began = time.monotonic()
    fresh = _start_own(name, settings, state_dir, service, note)
    # On record before the wait: if it never answers, `status` shows it down and the
    # next `up` or `restart` finds its ports.
    current.services[name] = fresh
    state.save(current)
    note(f"waiting for {name} to answer")
    current.ready_seconds.update(_await_ready([fresh], settings, began))
    state.save(current)
    return current


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
        live = [processes.alive(pid) for pid in _pids(service)]
        if service.mode == "managed" and service.pid and not any(live):
            condition = "down"
        elif service.mode == "managed" and service.pid and not all(live):
            condition = "degraded"  # a node of the cluster is down; `up` restarts it
        elif check:
            try:
                condition = "up" if _probe(service, settings) else "unreachable"
            except AuthenticationFailed:
                condition = "refused"  # it answers, but not to these credentials
        else:
            condition = "up"
        services[name] = {
            "state": condition,
            "endpoint": redact_url(service.endpoint),
            "mode": service.mode,
            "pid": service.pid,
            "log": service.log,
        }
        if name == "temporal" and (ui := temporal.ui_url(service)) is not None:
            services[name]["ui"] = ui
        if name == "kafka" and "nodes" in service.details:
            services[name]["nodes"] = [
                {
                    "node_id": node["node_id"],
                    "endpoint": node["endpoint"],
                    "pid": node["pid"],
                    "state": "up" if alive else "down",
                    "log": node["log"],
                }
                for node, alive in zip(kafka.nodes(service), live, strict=True)
            ]
            services[name]["replication_factor"] = service.details["replication_factor"]
    return {"services": services, "state_dir": str(state_dir)}


def settings_for(settings: Settings, current: StackState) -> Settings:
    """The same settings, pointed at the services of a running stack."""
    return settings.model_copy(
        update={
            "kafka": state.with_replication(
                settings.kafka.model_copy(
                    update={"bootstrap_servers": current.services["kafka"].endpoint}
                ),
                current.services["kafka"],
            ),
            "temporal": settings.temporal.model_copy(
                update={"address": current.services["temporal"].endpoint}
            ),
            "database": settings.database.model_copy(
                update={"url": current.services["database"].endpoint}
            ),
        }
    )


def started(before: StackState | None, after: StackState) -> list[str]:
    """The services `after` runs that `before` did not (new, or a new process)."""
    old = before.services if before else {}
    return [
        name
        for name, service in after.services.items()
        if name not in old
        or (_pids(old[name]), old[name].endpoint) != (_pids(service), service.endpoint)
    ]
