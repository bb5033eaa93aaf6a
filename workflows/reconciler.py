"""The reconciler: watches Temporal's verdict on the runs it closed without their
workflow code finishing them (terminated, timed out, reset) and publishes it to
flowledger.runtime.v1 (the decision is workflows.reconcile's). It reads Temporal and
writes Kafka, and decides nothing about a run: Temporal already has."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from flowledger.errors import ServiceUnavailable
from flowledger.metrics import HealthServer
from flowledger.settings import Settings
from schemas.runtime import RunReconciled, RunReset
from topics import clients
from topics.catalogue import RUNTIME
from topics.codes import KAFKA_UNAVAILABLE
from topics.producing import Outgoing, produce_and_flush
from topics.serde import encode_runtime
from workflows import reconcile, scheduled_run, schedules
from workflows.definitions import store
from workflows.messages import WORKFLOW_NAME, EmitRequest, RunInput
from workflows.metrics import ReconcilerMetrics
from workflows.schedule_events import Snapshot, publish_events, schedule_event
from workflows.schedule_plan import Report

log = logging.getLogger(__name__)

_VERDICTS: dict[WorkflowExecutionStatus, reconcile.Verdict] = {
    WorkflowExecutionStatus.TERMINATED: "TERMINATED",
    WorkflowExecutionStatus.TIMED_OUT: "TIMED_OUT",
}
# A reset run that keeps emitting while its record is published: how many times the
# record is published again with what the history has grown to, within one poll.
_RESET_ROUNDS = 5
# Executions a run may have continued through, followed back for its events.
_MAX_CHAIN = 10_000
_EMIT = "emit_runtime_events"
_RESET_CAUSE = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW


def visibility_query(task_queue: str, since: datetime) -> str:
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"WorkflowType = '{WORKFLOW_NAME}' AND TaskQueue = '{task_queue}' AND "
        f"(ExecutionStatus = 'Terminated' OR ExecutionStatus = 'TimedOut') AND "
        f"CloseTime > '{stamp}'"
    )


class Reconciler:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self._producer: Producer | None = None
        # closed execution -> the workflow id's current execution when its record was
        # acknowledged; a record is made again only when that changes (a terminated run
        # reset later). A restart publishes those within the lookback again; the
        # projector lets the copies change nothing.
        self._done: dict[str, str] = {}
        self._checked: dict[str, float] = {}  # closed execution -> monotonic time
        self.metrics = ReconcilerMetrics()
        self._polled = False
        # What the schedule reconcile at start changed; None until it has succeeded.
        self.schedule_report: Report | None = None
        # The last snapshot of each schedule a ScheduleObserved carried.
        self._observed: dict[str, Snapshot] = {}

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = clients.producer(self.settings)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.settings.kafka.request_timeout_s)
            self._producer = None

    async def poll_once(self) -> list[RunReconciled | RunReset]:
        """One look at Temporal's visibility; returns the records published."""
        since = datetime.now(UTC) - timedelta(seconds=self.settings.reconciler.lookback_s)
        query = visibility_query(self.settings.temporal.task_queue, since)
        found = [e async for e in self.client.list_workflows(query)]
        found.sort(key=lambda e: e.close_time or since)
        published: list[RunReconciled | RunReset] = []
        recheck = self.settings.reconciler.recheck_interval_s
        now = time.monotonic()
        listed = {e.run_id for e in found}
        for gone in [e for e in self._done if e not in listed]:
            # Past the lookback: forgotten, so the bookkeeping stays bounded by it.
            self._done.pop(gone, None)
            self._checked.pop(gone, None)
        for execution in found:
            if execution.status not in _VERDICTS:
                continue
            if execution.run_id in self._done and now - self._checked[execution.run_id] < recheck:
                continue
            self._checked[execution.run_id] = now
            latest = (await self.client.get_workflow_handle(execution.id).describe()).run_id
            latest = latest or execution.run_id
            if self._done.get(execution.run_id) == latest:
                continue
            published.extend(await self._reconcile(execution, latest))
            self._done[execution.run_id] = latest
        return published

    async def reconcile_schedules(self) -> Report:
        """Make Temporal's schedules match the published definitions; logs the changes."""
        records = await asyncio.to_thread(store.published, self.settings)
        report = await schedules.reconcile(self.settings, self.client, records.values())
        self.schedule_report = report
        log.info("schedules reconciled: %s", report.as_dict())
        return report

    async def observe_schedules(self) -> list[str]:
        """Publish a ScheduleObserved for every schedule whose next or last run time (or
        anything else the projection shows) moved since the last look."""
        events = []
        for found in await schedules.snapshots(self.settings, self.client):
            if found.moved(self._observed.get(found.schedule_id)):
                events.append(schedule_event("ScheduleObserved", found, "reconciler"))
            self._observed[found.schedule_id] = found
        await publish_events(self.settings, events)
        return [e.schedule_id for e in events]

    def readiness(self) -> dict[str, bool]:
        # Ready while its last look at Temporal's visibility (and any publishing) worked.
        return {"last_poll_ok": self._polled}

    async def _schedules_round(self) -> None:
        """The reconcile at start until it has succeeded once, then the look at the
        schedules' run times; a failure here never holds up the runs' verdicts."""
        try:
            if self.schedule_report is None:
                await self.reconcile_schedules()
            await self.observe_schedules()
        except Exception as exc:  # Temporal or Kafka away: the next poll tries again
            log.warning("schedule reconcile failed: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.reconciler.poll_interval_s
        while not stop.is_set():
            await self._schedules_round()
            try:
                await self.poll_once()
            except Exception as exc:  # Temporal or Kafka away: next poll tries again
                self.metrics.polls.labels("failed").inc()
                self._polled = False
                log.warning("reconcile poll failed: %s", exc)
            else:
                self.metrics.polls.labels("ok").inc()
                self._polled = True
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue

    async def _reconcile(
        self, execution: WorkflowExecution, latest: str
    ) -> list[RunReconciled | RunReset]:
        status = execution.status
        assert status is not None
        wid, closed_id = execution.id, execution.run_id
        closed_history = await self._history(wid, closed_id)
        reason, identity = _closing_words(closed_history)
        closed = reconcile.Closed(
            workflow_id=wid,
            execution_id=closed_id,
            status=_VERDICTS[status],
            closed_at=execution.close_time or datetime.now(UTC),
            reason=reason,
            identity=identity,
        )
        current = await self._current(wid, latest)
        if current is None:
            return []
        record = reconcile.decide(closed, current)
        if record is None:
            return []
        await self._publish(record)
        published: list[RunReconciled | RunReset] = [record]
        if isinstance(record, RunReset):
            # Live events of the reset execution that reached Kafka before the record
            # were dropped as stale; each round carries what the history has by then.
            for _ in range(_RESET_ROUNDS):
                again = await self._current(wid, current.execution_id)
                if again is None or reconcile.highest_seq(again.events) <= record.data.through_seq:
                    break
                record = reconcile.reset_record(closed, again)
                await self._publish(record)
                published.append(record)
        return published

    async def _history(self, workflow_id: str, execution_id: str) -> list[HistoryEvent]:
        handle = self.client.get_workflow_handle(workflow_id, run_id=execution_id)
        history = await handle.fetch_history()
        return list(history.events)

    async def _current(self, workflow_id: str, execution_id: str) -> reconcile.Current | None:
        history = await self._history(workflow_id, execution_id)
        if not history:
            return None
        started = history[0].workflow_execution_started_event_attributes
        inputs = await self.client.data_converter.decode(started.input.payloads, [RunInput])
        run_input = inputs[0]
        if not isinstance(run_input, RunInput):
            return None
        reset_reason = reset_identity = None
        reset = False
        for event in history:
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                continue
            failed = event.workflow_task_failed_event_attributes
            if failed.cause == _RESET_CAUSE:
                reset = True
                reset_reason = failed.failure.message or None
                reset_identity = failed.identity or None
        batches = await self._emitted(history)
        previous = started.continued_execution_run_id
        for _ in range(_MAX_CHAIN):
            if not previous:
                break
            earlier = await self._history(workflow_id, previous)
            if not earlier:
                break
            batches = [*(await self._emitted(earlier)), *batches]
            previous = earlier[
                0
            ].workflow_execution_started_event_attributes.continued_execution_run_id
        # A scheduled run's start input has no run id: the workflow derives it.
        run_id = (
            scheduled_run.scheduled_run_id(workflow_id)
            if scheduled_run.needs_resolving(run_input)
            else run_input.run_id
        )
        return reconcile.Current(
            execution_id=execution_id,
            run_id=run_id,
            tenant=run_input.tenant,
            events=tuple(reconcile.emitted(batches)),
            reset=reset,
            reset_reason=reset_reason,
            reset_identity=reset_identity,
        )

    async def _emitted(self, history: Sequence[HistoryEvent]) -> list[list[dict[str, Any]]]:
        batches: list[list[dict[str, Any]]] = []
        for event in history:
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                continue
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name != _EMIT:
                continue
            values = await self.client.data_converter.decode(
                scheduled.input.payloads, [EmitRequest]
            )
            request = values[0]
            if isinstance(request, EmitRequest):
                batches.append(list(request.events))
        return batches

    async def _publish(self, record: RunReconciled | RunReset) -> None:
        item = Outgoing(
            self.settings.topic(RUNTIME), record.run_id.encode("utf-8"), encode_runtime(record)
        )
        done = await asyncio.to_thread(
            produce_and_flush, self.producer, [item], self.settings.kafka.request_timeout_s
        )
        if done.failed:
            raise ServiceUnavailable(
                f"Kafka did not acknowledge the reconcile record of run {record.run_id}: "
                + done.failed[0][1],
                code=KAFKA_UNAVAILABLE,
            )
        self.metrics.published.labels(record.type).inc()
        log.info("published %s for run %s", record.type, record.run_id)


def _closing_words(history: Sequence[HistoryEvent]) -> tuple[str | None, str | None]:
    """The reason and identity Temporal recorded when it closed the execution."""
    for event in reversed(history):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            attrs = event.workflow_execution_terminated_event_attributes
            return attrs.reason or None, attrs.identity or None
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            return "the run's execution timeout passed", None
    return None, None


async def run_reconciler(
    settings: Settings,
    client: Client,
    stop: asyncio.Event,
    announce: Callable[[str], None] | None = None,
) -> None:
    reconciler = Reconciler(settings, client)
    server: HealthServer | None = None
    if settings.metrics.enabled:
        server = HealthServer(
            "reconciler",
            reconciler.metrics.registry,
            reconciler.readiness,
            host=settings.metrics.host,
            port=settings.metrics.port,
        )
        url = server.start()
        if announce is not None:
            announce(url)
    try:
        await reconciler.run(stop)
    finally:
        reconciler.close()
        if server is not None:
            server.close()
