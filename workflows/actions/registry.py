"""The action registry: (name, version) -> input model, output model, handler.

Definitions name actions by id and version; publish-time validation asks this
registry, and the activity that runs an action looks it up here too, so both sides
agree on what exists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flowledger.errors import FlowledgerError
from flowledger.settings import Settings


class ActionFailed(FlowledgerError):
    """An action that ran and failed. ``category`` is what `retry_on` and `catch` see."""

    code = "ACTION_FAILED"
    category = "ActionError"

    def __init__(
        self, message: str, *, code: str | None = None, retryable: bool = True, **context: Any
    ) -> None:
        super().__init__(message, code=code, retryable=retryable, **context)


@dataclass(frozen=True)
class ActionContext:
    settings: Settings
    run_id: str
    tenant: str
    step_path: str
    iteration: str
    idempotency_key: str
    attempt: int
    # Shell resources lent by the worker (a Kafka producer, an HTTP client).
    resources: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[BaseModel, ActionContext], Awaitable[BaseModel]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    version: int
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    handler: Handler
    description: str = ""
    # core.log's effect is a RunLog runtime event, which only workflow code may number.
    emits_run_log: bool = False


REGISTRY: dict[tuple[str, int], ActionSpec] = {}


def register(spec: ActionSpec) -> ActionSpec:
    REGISTRY[(spec.name, spec.version)] = spec
    return spec


def lookup(name: str, version: int) -> ActionSpec:
    _load_builtins()
    spec = REGISTRY.get((name, version))
    if spec is None:
        known = sorted(v for (n, v) in REGISTRY if n == name)
        hint = f"; known versions: {known}" if known else ""
        raise FlowledgerError(
            f"unknown action {name} version {version}{hint}",
            code="ACTION_UNKNOWN",
            action=name,
            version=version,
        )
    return spec


def known_actions() -> dict[tuple[str, int], ActionSpec]:
    _load_builtins()
    return dict(REGISTRY)


def _load_builtins() -> None:
    # Imported on first use so the registry module itself has no I/O dependencies.
    from workflows.actions import builtins  # noqa: F401
