"""Which events a wait takes, on the real stack with the real processor: no stale
wake-up (a draft received for an earlier wait), no lost one (a run started while no
worker polls), and a run parked in one wait on a busy key stays small."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client

from flowledger.settings import Settings
from processors.audit import HELD_HEADER
from schemas.envelope import EventEnvelope
from tests.integration.runtime_support import (
    definition,
    events_of,
    of_type,
    processing,
    record,
    send,
    until,
    wait_for_events,
    worker,
)
from topics.catalogue import AUDIT
from topics.reader import ReadRecord, read_all
from workflows import control
from workflows.client import connect
from workflows.wait_rule import received_time


def doc_event(doc: str | None, payload: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type="doc.changed",
        tenant="acme",
        occurred_at=datetime.now(UTC),
        workflow_correlation_key=doc,
        payload=payload,
    )


def doc_wait(step_id: str, filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "event.wait",
        "event_type": "doc.changed",
        "correlation_key": {"$expr": "payload.doc"},
        "filters": filters or [],
        "assign": {f"vars.{step_id}": {"$expr": "event.event_id"}},
    }


def with_processor(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"processor": settings.processor.model_copy(update=changes)})


def past(moment: datetime) -> bool:
    return datetime.now(UTC) > moment


async def result_of(client: Client, workflow_id: str, timeout: float) -> Any:
    done = await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)
    return done["output"] if isinstance(done, dict) else done.output


async def test_a_draft_routed_to_the_first_wait_never_resumes_the_second(
    settings: Settings,
) -> None:
    skew = 0.5
    settings = with_processor(settings, clock_skew_tolerance_s=skew)
    document = definition(
        [
            doc_wait("first", [{"path": "state", "op": "=", "value": "approved"}]),
            doc_wait("second"),
            {
                "id": "ret",
                "type": "control.return",
                "output": {"$expr": "{'first': vars.first, 'second': vars.second}"},
            },
        ]
    )
    async with worker(settings) as client, processing(settings) as runner:
        started = await control.start(settings, client, record(document), {"doc": "D1"})
        await wait_for_events(settings, started.run_id, "WaitCreated")

        draft = doc_event("D1", {"state": "draft"})
        await asyncio.to_thread(send, settings, [draft])
        sent = datetime.now(UTC)
        await until(lambda: runner.stats.signals >= 1, 30, "the draft routed to the run")
        # The approval comes well after the draft (more than the skew tolerance).
        await until(lambda: past(sent + timedelta(seconds=skew * 2)), 10, "the skew to pass")
        approved = doc_event("D1", {"state": "approved"})
        await asyncio.to_thread(send, settings, [approved])

        def second_wait() -> bool:
            return len(of_type(events_of(settings, started.run_id), "WaitCreated")) == 2

        await until(second_wait, 30, "the second wait")
        later = doc_event("D1", {"state": "edited"})
        await asyncio.to_thread(send, settings, [later])
        output = await result_of(client, started.workflow_id, 60)
    assert output == {"first": str(approved.event_id), "second": str(later.event_id)}
    events = await wait_for_events(settings, started.run_id)
    dropped = [
        e["event_id"]
        for log in of_type(events, "RunLog")
        if log["data"]["details"].get("action") == "drop_buffered"
        for e in log["data"]["details"]["events"]
    ]
    assert dropped == [str(draft.event_id)]
    first, second = (
        received_time(w["data"]["eligible_from"]) for w in of_type(events, "WaitCreated")
    )
    resolved_first = of_type(events, "WaitResolved")[0]
    assert second == received_time(resolved_first["occurred_at"])
    assert first is not None and second is not None and first < second


async def test_a_run_started_while_no_worker_polls_takes_the_event_sent_meanwhile(
    settings: Settings,
) -> None:
    skew = settings.processor.clock_skew_tolerance_s
    document = definition([doc_wait("first")])
    document["steps"].append(
        {"id": "ret", "type": "control.return", "output": {"$expr": "vars.first"}}
    )
    async with processing(settings) as runner:
        client = await connect(settings)
        started = await control.start(settings, client, record(document), {"doc": "D2"})
        event = doc_event("D2", {"state": "approved"})
        await asyncio.to_thread(send, settings, [event])
        sent = datetime.now(UTC)
        await until(lambda: runner.stats.held >= 1, 30, "the processor to hold the event")
        # The worker comes back well after the event: the wait is created later than
        # the event by more than the skew tolerance.
        await until(lambda: past(sent + timedelta(seconds=skew + 1)), 10, "time to pass")
        async with worker(settings) as polling:
            output = await result_of(polling, started.workflow_id, 60)
    assert output == str(event.event_id)
    events = await wait_for_events(settings, started.run_id)
    created = of_type(events, "WaitCreated")[0]
    point = received_time(created["data"]["eligible_from"])
    opened = received_time(created["occurred_at"])
    assert point is not None and opened is not None
    assert opened - point > timedelta(seconds=skew), "the wait opened soon after the start"
    assert of_type(events, "WaitResolved")[0]["data"]["matched_event_id"] == str(event.event_id)


async def test_a_held_event_no_wait_takes_is_audited_when_its_window_ends(
    settings: Settings,
) -> None:
    settings = with_processor(settings, early_event_window_s=2.0)
    event = doc_event("D4", {"state": "draft"})
    async with processing(settings) as runner:
        # An event read later than its window is not held at all: first make sure the
        # processor reads as events come (an uncorrelated one is never held).
        await asyncio.to_thread(send, settings, [doc_event(None, {})])
        await until(lambda: runner.stats.records >= 1, 60, "the processor to read")
        await asyncio.to_thread(send, settings, [event])
        await until(lambda: runner.stats.held >= 1, 30, "the event to be held")
        await until(lambda: runner.stats.expired >= 1, 30, "the held event to expire")

    def audits() -> list[ReadRecord]:
        return [
            r
            for r in read_all(settings, settings.topic(AUDIT))
            if json.loads(r.value).get("event_id") == str(event.event_id)
        ]

    held, done = await until(lambda: (found := audits()) and len(found) == 2 and found, 30)
    assert held.headers.get(HELD_HEADER) == "true" and HELD_HEADER not in done.headers
    assert json.loads(done.value)["deliveries"] == []
    assert json.loads(done.value)["expired"] is True and not json.loads(held.value)["expired"]


async def history_chain(client: Client, workflow_id: str) -> list[int]:
    """The length of every execution's history, first to last, following each one
    back to the execution it continued."""
    latest = await client.get_workflow_handle(workflow_id).describe()
    lengths: list[int] = []
    run_id: str | None = latest.run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.insert(0, len(history.events))
        first = history.events[0].workflow_execution_started_event_attributes
        run_id = first.continued_execution_run_id or None
    return lengths


async def test_a_run_parked_on_a_busy_key_continues_as_new_and_resumes_on_its_event(
    settings: Settings,
) -> None:
    noise, per_execution = 3000, 400
    settings = settings.model_copy(
        update={
            "workflows": settings.workflows.model_copy(
                update={"continue_as_new_signals": per_execution}
            )
        }
    )
    wait = doc_wait("w", [{"path": "state", "op": "=", "value": "approved"}])
    wait["timeout_ms"] = 3_600_000
    document = definition(
        [wait, {"id": "ret", "type": "control.return", "output": {"$expr": "vars.w"}}]
    )
    async with worker(settings) as client, processing(settings) as runner:
        started = await control.start(settings, client, record(document), {"doc": "D3"})
        await wait_for_events(settings, started.run_id, "WaitCreated")
        drafts = [doc_event("D3", {"state": "draft", "n": n}) for n in range(noise)]
        await asyncio.to_thread(send, settings, drafts)
        await until(lambda: runner.stats.signals >= noise, 600, "3,000 signals")
        handle = client.get_workflow_handle(started.workflow_id)
        summary = await handle.query("summary")
        assert summary["status"] == "WAITING"
        assert summary["buffered_events"] <= settings.workflows.buffered_events_limit
        match = doc_event("D3", {"state": "approved"})
        await asyncio.to_thread(send, settings, [match])
        output = await result_of(client, started.workflow_id, 120)
        lengths = await history_chain(client, started.workflow_id)
    assert output == str(match.event_id)
    events = await wait_for_events(settings, started.run_id, timeout=60)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(of_type(events, "WaitCreated")) == 1
    resolved = of_type(events, "WaitResolved")
    assert [(r["data"]["resolution"], r["data"]["matched_event_id"]) for r in resolved] == [
        ("RESOLVED", str(match.event_id))
    ]
    switches = len(of_type(events, "RunContinuedAsNew"))
    assert switches >= noise // per_execution - 1 and len(lengths) == switches + 1
    # Each execution's history is bounded by its signals, whatever the run received.
    assert max(lengths) < 5 * per_execution, lengths
    dropped = {
        e["event_id"]
        for log in of_type(events, "RunLog")
        if log["data"]["details"].get("action") == "drop_buffered"
        for e in log["data"]["details"]["events"]
    }
    assert dropped <= {str(d.event_id) for d in drafts}
    print(f"\nparked wait: {noise} events, {switches} switches, histories {lengths}")
