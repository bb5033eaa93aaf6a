"""Carrying out the Temporal side of a batch: each plan's signals and starts, in lanes
that keep one workflow's effects in partition order, each turned into a delivery
outcome for the plan's audit. A transient failure is retried (Backoff); anything
unexpected fails that one record (PROCESSING_FAILED), never the batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from temporalio.client import Client

from flowledger import tracing
from flowledger.logs import log_context
from flowledger.settings import Settings
from processors import effects
from processors.effects import Backoff, StartRefused, Stopped, Transient
from processors.metrics import ProcessorMetrics
from processors.pipeline import (
    TRIGGER_MAPPING_FAILED,
    Plan,
    SignalTarget,
    StartTarget,
    processing_failed,
)
from processors.stats import Stats
from schemas.audit import Delivery
from schemas.bounded_json import RecordRefused
from workflows.messages import DeliveredEvent

log = logging.getLogger(__name__)

Effect = Callable[[], Awaitable[None]]


class Deliveries:
    def __init__(
        self,
        settings: Settings,
        backoff: Backoff,
        stats: Stats,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.backoff = backoff
        self.stats = stats
        self.metrics = metrics or ProcessorMetrics()
        self.lanes = effects.Lanes(settings.processor.max_in_flight)
        self.client: Client | None = None
        self.tracer = tracing.tracer(settings.tracing)

    def _span(self, plan: Plan, name: str = "flowledger.process_record") -> Span:
        """The processor's span for one ingress record, continuing the trace in its
        `traceparent` header; its signals and starts (the SDK's interceptor) are its
        children."""
        r = plan.record
        attributes: dict[str, str | int] = {
            "messaging.destination": r.topic,
            "messaging.kafka.partition": r.partition,
            "messaging.kafka.offset": r.offset,
        }
        if plan.envelope is not None:
            attributes["flowledger.event_id"] = str(plan.envelope.event_id)
        return self.tracer.start_span(
            name,
            context=tracing.context_of(r.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )

    async def run(self, plans: list[Plan], finished: Callable[[Plan], None]) -> None:
        """Signals and starts of a batch; each plan's audit gets their outcomes, then
        `finished(plan)` is called as soon as that plan's last effect is done."""
        groups: dict[str, list[Effect]] = {}
        outcomes: dict[int, list[Delivery]] = {id(p): list(p.already_delivered) for p in plans}
        left: dict[int, int] = {
            id(p): (len(p.signals) + len(p.starts)) if p.envelope is not None else 0 for p in plans
        }
        # With tracing off a span only carries the record's trace into the logs of its
        # effects: a record without any (held, refused, no wait) needs none.
        traced = self.settings.tracing.active
        spans = {id(p): self._span(p) if traced or left[id(p)] else INVALID_SPAN for p in plans}

        def end(plan: Plan) -> None:
            span = spans[id(plan)]
            if plan.rejected is not None:
                span.set_attribute("flowledger.refused", plan.rejected.code)
            span.end()

        def done(plan: Plan, delivery: Delivery) -> None:
            outcomes[id(plan)].append(delivery)
            spans[id(plan)].add_event(
                f"{delivery.kind} {delivery.outcome}", {"flowledger.run_id": delivery.run_id}
            )
            left[id(plan)] -= 1
            if left[id(plan)] == 0:
                with_deliveries(plan, outcomes[id(plan)])
                end(plan)
                finished(plan)

        for plan in plans:
            if left[id(plan)] == 0:
                with_deliveries(plan, outcomes[id(plan)])
                end(plan)
                finished(plan)

        for plan in plans:
            if plan.envelope is None:
                continue
            try:
                event = plan.delivered_event() if plan.signals else None
            except Exception as exc:
                plan.fail(processing_failed(exc))
                event = None
            for target in plan.signals:

                async def do_signal(
                    plan: Plan = plan, target: SignalTarget = target, ev: Any = event
                ) -> None:
                    with trace.use_span(spans[id(plan)], end_on_exit=False):
                        outcome = await self._signal(plan, target, ev)
                    done(
                        plan,
                        Delivery(
                            run_id=target.run_id,
                            wait_id=target.wait_id,
                            kind="signal",
                            outcome=outcome,
                        ),
                    )

                groups.setdefault(target.workflow_id, []).append(do_signal)
            for start_target in plan.starts:

                async def do_start(plan: Plan = plan, target: StartTarget = start_target) -> None:
                    with trace.use_span(spans[id(plan)], end_on_exit=False):
                        outcome = await guarded(
                            plan, lambda: self._start(plan, target), run_id=target.run_id
                        )
                    self.stats.starts += outcome == "started"
                    self.metrics.start(outcome)
                    done(plan, Delivery(run_id=target.run_id, kind="start", outcome=outcome))

                groups.setdefault(start_target.workflow_id, []).append(do_start)

        if groups:
            await self.lanes.run(groups)

    async def release(self, pairs: list[tuple[Plan, SignalTarget]]) -> None:
        """Held events delivered to the waits that appeared for them; each plan's audit
        gets the new delivery."""
        groups: dict[str, list[Effect]] = {}
        for plan, target in pairs:

            async def deliver(plan: Plan = plan, target: SignalTarget = target) -> None:
                with self.tracer.start_as_current_span(
                    "flowledger.release_held",
                    context=tracing.context_of(plan.record.traceparent),
                    kind=SpanKind.CONSUMER,
                    attributes={"flowledger.run_id": target.run_id},
                ):
                    outcome = await self._signal(plan, target, plan.delivered_event())
                delivery = Delivery(
                    run_id=target.run_id, wait_id=target.wait_id, kind="signal", outcome=outcome
                )
                plan.audit = plan.audit.model_copy(
                    update={"deliveries": [*plan.audit.deliveries, delivery]}
                )

            groups.setdefault(target.workflow_id, []).append(deliver)
        await self.lanes.run(groups)

    async def _signal(self, plan: Plan, target: SignalTarget, event: DeliveredEvent | None) -> str:
        assert self.client is not None
        client = self.client
        if event is None:
            # The event could not be built for this record: it fails, unsent.
            return "failed: PROCESSING_FAILED"
        outcome = await guarded(
            plan,
            lambda: self.backoff.retry(
                f"signal {target.workflow_id}", lambda: effects.signal(client, target, event)
            ),
            run_id=target.run_id,
        )
        self.stats.signals += outcome == "delivered"
        self.metrics.signal(outcome)
        if outcome == "delivered":
            waited = datetime.now(UTC) - plan.record.timestamp
            self.metrics.wake_latency.observe(max(0.0, waited.total_seconds()))
        return outcome

    async def _start(self, plan: Plan, target: StartTarget) -> str:
        assert self.client is not None
        client = self.client
        context = plan.trigger_context()
        try:
            return await self.backoff.retry(
                f"start {target.workflow_id}",
                lambda: effects.start(
                    self.settings, client, target, context, plan.record.timestamp
                ),
            )
        except StartRefused as exc:
            definition = target.record
            plan.fail(
                RecordRefused(
                    f"the trigger of {definition.definition_id} v{definition.version} "
                    f"refused the event: {exc.code}: {exc.message}",
                    code=TRIGGER_MAPPING_FAILED,
                    field="trigger.payload_mapping",
                    reason=exc.code,
                )
            )
            return f"refused: {exc.code}"


async def guarded(
    plan: Plan, effect: Callable[[], Awaitable[str]], *, run_id: str | None = None
) -> str:
    """An effect's outcome; an unexpected exception fails this record alone
    (PROCESSING_FAILED, dead-lettered with the exception) instead of the batch."""
    event_id = str(plan.envelope.event_id) if plan.envelope is not None else None
    with log_context(run_id=run_id, event_id=event_id):
        try:
            return await effect()
        except (Stopped, Transient, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("an effect of %s failed", plan.record)
            plan.fail(processing_failed(exc))
            return "failed: PROCESSING_FAILED"


def with_deliveries(plan: Plan, found: list[Delivery]) -> None:
    if found:
        # Signals first, then starts, each in a stable order: a redone event reports
        # its deliveries the same way.
        found.sort(key=lambda d: (d.kind != "signal", d.run_id, d.wait_id or ""))
        plan.audit = plan.audit.model_copy(update={"deliveries": found})
