"""What an action is: its spec (name, version, input and output models, handler),
the context it runs with, and the failure it raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from workflows.codes import ACTION_FAILED


class ActionFailed(FlowledgerError):
    """An action that ran and failed. ``category`` is what `retry_on` and `catch` see."""

    code = ACTION_FAILED
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
