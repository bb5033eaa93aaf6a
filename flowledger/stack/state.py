"""`<state>/stack.json`: what `stack up` started or attached to, so `status` and `down`
work from a later process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from flowledger.settings import KafkaSettings

STATE_FILE = "stack.json"


class ServiceState(BaseModel):
    name: str
    endpoint: str
    # managed: started by us (we stop it); attached: someone else's.
    mode: Literal["managed", "attached"] = "managed"
    pid: int | None = None
    log: str | None = None
    data_dir: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def port(self) -> int:
        """The port of a host:port endpoint (Kafka, Temporal)."""
        return int(self.endpoint.rsplit(":", 1)[1])


class StackState(BaseModel):
    state_dir: str
    services: dict[str, ServiceState] = Field(default_factory=dict)
    started_at: str | None = None
    ready_seconds: dict[str, float] = Field(default_factory=dict)


def path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load(state_dir: Path) -> StackState | None:
    file = path(state_dir)
    if not file.exists():
        return None
    return StackState.model_validate(json.loads(file.read_text(encoding="utf-8")))


def save(state: StackState) -> None:
    file = path(Path(state.state_dir))
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(file)


def remove(state_dir: Path) -> None:
    path(state_dir).unlink(missing_ok=True)


def with_replication(settings: KafkaSettings, service: ServiceState) -> KafkaSettings:
    """The client settings with the replication of our own cluster, unless the
    settings name one themselves."""
    replicas = service.details.get("replication_factor")
    if service.mode != "managed" or not isinstance(replicas, int):
        return settings
    update: dict[str, int] = {}
    if "replication_factor" not in settings.model_fields_set:
        update["replication_factor"] = replicas
    if "min_insync_replicas" not in settings.model_fields_set:
        update["min_insync_replicas"] = int(service.details["min_insync_replicas"])
    return settings.model_copy(update=update) if update else settings
