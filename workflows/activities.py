"""The activities: the only place the runtime touches the world. One input model
each; failures carry their category and code to the workflow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from confluent_kafka import Producer
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from topics import clients
from topics.catalogue import RUNTIME
from topics.producing import Outgoing, produce_and_flush
from workflows.actions.registry import lookup
from workflows.actions.spec import ActionContext, ActionFailed
from workflows.codes import (
    ACTION_CRASHED,
    ACTION_INPUT_INVALID,
    ACTION_UNKNOWN,
    DEFINITION_NOT_FOUND,
)
from workflows.messages import (
    ActionRequest,
    ActionResult,
    DefinitionReply,
    DefinitionRequest,
    EmitRequest,
)

T = TypeVar("T")


def _failure(
    category: str,
    code: str,
    message: str,
    *,
    retryable: bool,
    details: dict[str, Any] | None = None,
) -> ApplicationError:
    return ApplicationError(
        message,
        {"code": code, "message": message, "details": details or {}, "retryable": retryable},
        type=category,
        non_retryable=True,
    )


HEARTBEAT_EVERY_S = 2.0


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await `work`, heartbeating meanwhile, so that a worker that dies mid-action
    is noticed in seconds rather than at the action's full timeout."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        activity.heartbeat()


class RuntimeActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Producer | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = clients.producer(self.settings, **{"linger.ms": 2})
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.settings.kafka.request_timeout_s)

    @activity.defn(name="emit_runtime_events")
    async def emit_runtime_events(self, request: EmitRequest) -> int:
        """Publish a run's events keyed by run_id (so they stay in seq order on one
        partition) and return only once Kafka has acknowledged all of them."""
        topic = self.settings.topic(RUNTIME)
        key = request.run_id.encode("utf-8")
        items = [
            Outgoing(topic, key, json.dumps(event, separators=(",", ":")).encode("utf-8"))
            for event in request.events
        ]
        # Off the event loop: the flush waits for Kafka, heartbeats must not.
        done = await asyncio.to_thread(
            produce_and_flush, self.producer, items, self.settings.kafka.request_timeout_s
        )
        if done.failed:
            # Retryable: Temporal calls again and the deterministic event ids let
            # consumers drop whatever did land the first time.
            raise ApplicationError(
                f"Kafka did not acknowledge {len(done.failed)} runtime event(s): "
                + "; ".join(why for _item, why in done.failed[:3]),
                type="KafkaUnavailable",
            )
        return len(request.events)

    @activity.defn(name="load_definition")
    async def load_definition(self, request: DefinitionRequest) -> DefinitionReply:
        """A child run's definition, read from the definitions topic (latest version
        unless the step pins one)."""
        from workflows.definitions import store

        if request.version is not None:
            record = await asyncio.to_thread(
                store.get, self.settings, request.tenant, request.definition_id, request.version
            )
        else:
            record = await asyncio.to_thread(
                store.latest, self.settings, request.tenant, request.definition_id
            )
        if record is None:
            what = request.definition_id + (f" v{request.version}" if request.version else "")
            raise _failure(
                "ValidationError",
                DEFINITION_NOT_FOUND,
                f"no published definition {what} for tenant {request.tenant}",
                retryable=False,
            )
        return DefinitionReply(
            definition_id=record.definition_id,
            version=record.version,
            definition_hash=record.hash,
            definition=record.definition,
        )

    @activity.defn(name="run_action")
    async def run_action(self, request: ActionRequest) -> ActionResult:
        try:
            spec = lookup(request.action, request.version)
        except FlowledgerError as exc:
            raise _failure(
                "ValidationError", ACTION_UNKNOWN, exc.message, retryable=False
            ) from None
        try:
            data = spec.input_model.model_validate(request.input)
        except ValidationError as exc:
            raise _failure(
                "ValidationError",
                ACTION_INPUT_INVALID,
                f"input of {request.action} v{request.version}: {exc}",
                retryable=False,
                details={"errors": json.loads(exc.json(include_url=False))},
            ) from None
        context = ActionContext(
            settings=self.settings,
            run_id=request.run_id,
            tenant=request.tenant,
            step_path=request.step_path,
            iteration=request.iteration,
            idempotency_key=request.idempotency_key,
            attempt=request.attempt,
            # One producer per worker, not one per emitted event.
            resources={"producer": self.producer},
        )
        try:
            output = await _heartbeating(spec.handler(data, context))
        except ActionFailed as exc:
            raise _failure(
                exc.category,
                exc.code,
                exc.message,
                retryable=exc.retryable,
                details={
                    k: v for k, v in exc.context.items() if isinstance(v, str | int | float | bool)
                },
            ) from None
        except Exception as exc:  # an action's own bug is still an ActionError to the run
            raise _failure(
                "ActionError",
                ACTION_CRASHED,
                f"{request.action} raised {type(exc).__name__}: {exc}",
                retryable=True,
            ) from None
        dumped = output.model_dump(mode="json", by_alias=True, exclude_none=True)
        result: dict[str, Any] = {"output": dumped}
        if spec.emits_run_log:
            result["run_log"] = {
                "level": dumped.get("level", "INFO"),
                "message": dumped.get("message", ""),
                "details": dumped.get("details", {}),
            }
        return ActionResult.model_validate(result)
