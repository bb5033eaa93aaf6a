"""The activities: the only place the runtime touches the world. One input model
each; failures carry their category and code to the workflow."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from flowledger import retry, tracing
from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from topics import clients
from topics.catalogue import RUNTIME
from topics.producing import Header, Outgoing, produce_and_flush
from workflows.actions.ledger import ActionLedger, LedgerKey, ledger_engine
from workflows.actions.ledger import now_ms as ledger_now_ms
from workflows.actions.registry import lookup
from workflows.actions.spec import ActionContext, ActionFailed, ActionSpec
from workflows.codes import (
    ACTION_CRASHED,
    ACTION_INPUT_INVALID,
    ACTION_KEY_BUSY,
    ACTION_LEDGER_UNAVAILABLE,
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
from workflows.metrics import WorkerMetrics

T = TypeVar("T")
log = logging.getLogger(__name__)


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


async def _heartbeating(
    work: Awaitable[T], beat: Callable[[], Awaitable[object]] | None = None
) -> T:
    """Await `work`, heartbeating meanwhile, so that a worker that dies mid-action
    is noticed in seconds rather than at the action's full timeout. `beat` runs with
    each heartbeat (the ledger lease's renewal)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        activity.heartbeat()
        if beat is not None:
            try:
                await beat()
            except SQLAlchemyError as exc:
                # A missed renewal only shortens the lease; the next beat tries again.
                log.warning("renewing an action's ledger lease failed: %s", exc)


def _ledger_down(exc: BaseException) -> ApplicationError:
    return _failure(
        "ActionError",
        ACTION_LEDGER_UNAVAILABLE,
        f"the idempotency ledger is unavailable: {exc}",
        retryable=True,
    )


class RuntimeActivities:
    def __init__(
        self,
        settings: Settings,
        ledger: ActionLedger | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self._producer: Producer | None = None
        self._ledger = ledger
        self.metrics = metrics or WorkerMetrics()

    @property
    def ledger(self) -> ActionLedger:
        """The idempotency ledger, in the projection database (its migrations create
        the table; the worker's composition root runs them)."""
        if self._ledger is None:
            self._ledger = ActionLedger(
                ledger_engine(self.settings.database_url()),
                lease_ms=int(self.settings.actions.ledger_lease_s * 1000),
            )
        return self._ledger

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = clients.producer(self.settings, **{"linger.ms": 2})
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.settings.kafka.request_timeout_s)
            # Dropped, so the client goes now rather than whenever this object does.
            self._producer = None
        if self._ledger is not None:
            self._ledger.close()

    @activity.defn(name="emit_runtime_events")
    async def emit_runtime_events(self, request: EmitRequest) -> int:
        """Publish a run's events keyed by run_id (so they stay in seq order on one
        partition) and return only once Kafka has acknowledged all of them."""
        topic = self.settings.topic(RUNTIME)
        key = request.run_id.encode("utf-8")
        with self._emit_span(request) as span:
            header = tracing.traceparent_of(span)
            headers: list[Header] = [(tracing.TRACEPARENT, header.encode())] if header else []
            items = [
                Outgoing(
                    topic, key, json.dumps(event, separators=(",", ":")).encode("utf-8"), headers
                )
                for event in request.events
            ]
            began = time.perf_counter()
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
        self.metrics.emitted(request.events, time.perf_counter() - began)
        return len(request.events)

    def _emit_span(self, request: EmitRequest) -> AbstractContextManager[Span]:
        """The step evidence of a trace: the events of the steps a delivered event
        resumed go out in a span of that event's trace (linked to the activity's own
        span, which belongs to the run's trace); the records carry it as `traceparent`."""
        current = trace.get_current_span().get_span_context()
        parent = tracing.context_of(request.traceparent)
        links = [Link(current)] if parent is not None and current.is_valid else []
        types = sorted({str(e.get("type")) for e in request.events})
        return tracing.tracer(self.settings.tracing).start_as_current_span(
            "flowledger.emit_runtime_events",
            context=parent,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes={
                "flowledger.run_id": request.run_id,
                "flowledger.events": len(request.events),
                "flowledger.event_types": types,
            },
        )

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
        if not request.ledger:
            return await _execute(spec, data, context, request)
        return await self._through_ledger(spec, data, context, request)

    async def _through_ledger(
        self, spec: ActionSpec, data: Any, context: ActionContext, request: ActionRequest
    ) -> ActionResult:
        """Run the action only if no attempt, run or rerun has succeeded with its key
        yet, and never while another attempt holds the key."""
        ledger = self.ledger
        key = LedgerKey(request.tenant, request.action, request.version, request.idempotency_key)
        # Unique per execution of the activity: a re-run of the same attempt after its
        # worker was lost must not mistake the dead worker's lease for its own.
        holder = f"{request.run_id}:{request.step_path}#{request.attempt}:{uuid.uuid4().hex}"
        try:
            claim = await asyncio.to_thread(
                ledger.claim, key, holder, request.run_id, request.step_path, request.attempt
            )
        except SQLAlchemyError as exc:
            raise _ledger_down(exc) from None
        if claim.output is not None:
            return ActionResult(output=claim.output, cached=True)
        if not claim.held:
            wait_ms = max(claim.busy_until_ms - ledger_now_ms(), 0)
            raise _failure(
                "ActionError",
                ACTION_KEY_BUSY,
                f"{request.action} v{request.version} with key {request.idempotency_key!r} "
                f"is being run by {claim.busy_holder or 'another attempt'}",
                retryable=True,
                details={"retry_after_ms": wait_ms, "holder": claim.busy_holder},
            )
        try:
            result = await _execute(
                spec,
                data,
                context,
                request,
                beat=lambda: asyncio.to_thread(ledger.renew, key, holder),
            )
        except BaseException:
            try:
                await asyncio.to_thread(ledger.release, key, holder)
            except SQLAlchemyError as exc:
                # The lease then runs out by itself; the failure is what the run sees.
                log.warning("releasing an action's ledger lease failed: %s", exc)
            raise
        lease_s = self.settings.actions.ledger_lease_s
        try:
            recorded = await _heartbeating(
                asyncio.to_thread(
                    retry.until_deadline,
                    lambda: ledger.record(key, holder, result.output),
                    transient=lambda exc: isinstance(exc, SQLAlchemyError),
                    seconds=lease_s / 2,
                )
            )
        except SQLAlchemyError as exc:
            # The action did run: its result goes to the run, and the key stays
            # leased until it expires, when a later attempt runs the action again.
            log.warning("recording %s in the idempotency ledger failed: %s", key, exc)
            return result
        if recorded != result.output:
            # A holder that took over our expired lease recorded its result first.
            return ActionResult(output=recorded, cached=True)
        return result


async def _execute(
    spec: ActionSpec,
    data: Any,
    context: ActionContext,
    request: ActionRequest,
    beat: Callable[[], Awaitable[object]] | None = None,
) -> ActionResult:
    try:
        output = await _heartbeating(spec.handler(data, context), beat)
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
