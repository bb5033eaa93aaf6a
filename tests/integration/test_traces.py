"""Traces on the real stack: one event's W3C trace from its publish through the
processor's span for its record, the signal, the resumed run's emitted events (the
step evidence, see docs/architecture.md) and the projector batch that applied them."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from flowledger import tracing
from flowledger.settings import Settings
from projections.projector import Projector
from schemas.envelope import EventEnvelope
from tests import tracing_support
from tests.integration.runtime_support import definition, processing, start, worker
from tests.waiting import until
from topics.catalogue import DEADLETTER, EVENTS, RUNTIME
from topics.publisher import publish
from topics.reader import read_all


def waiting() -> dict[str, Any]:
    return definition(
        [
            {
                "id": "w",
                "type": "event.wait",
                "event_type": "order.paid",
                "correlation_key": {"$expr": "payload.key"},
                "assign": {"vars.got": {"$expr": "event.event_id"}},
            },
            {"id": "ret", "type": "control.return", "output": {"$expr": "vars.got"}},
        ]
    )


def paid(key: str) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type="order.paid",
        tenant="acme",
        occurred_at=datetime.now(UTC),
        workflow_correlation_key=key,
        payload={},
    )


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def span_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


async def test_one_events_trace_reaches_from_publish_to_the_projector_batch(
    settings: Settings,
) -> None:
    traced = tracing_support.traced(settings)
    key = f"order-{uuid.uuid4().hex[:8]}"
    # The caller's own trace, as an upstream service would hand it over.
    given = tracing.new_traceparent()
    trace_id = tracing.trace_id(given)
    async with worker(traced) as client, processing(traced):
        run_id, handle = await start(traced, client, waiting(), {"key": key})
        await until(
            lambda: any(
                r.value and '"WaitCreated"' in r.value and run_id in r.value
                for r in read_all(traced, traced.topic(RUNTIME))
            ),
            what="the run's wait",
        )
        event = paid(key)
        published = await asyncio.to_thread(publish, traced, [(1, event)], traceparent=given)
        assert published[0].trace_id == trace_id
        done = await asyncio.wait_for(handle.result(), 30)
        output = done["output"] if isinstance(done, dict) else done.output
        assert output == str(event.event_id)

        def emitted() -> list[ReadableSpan]:
            found = named(tracing_support.of_trace(trace_id), "flowledger.emit_runtime_events")
            types = [
                t for s in found for t in (s.attributes or {}).get("flowledger.event_types", ())
            ]
            return found if "RunCompleted" in types else []

        emits = await until(emitted, what="the resumed run's emit span in the event's trace")

    projector = Projector(traced)
    stats = await asyncio.to_thread(projector.run_until_idle, 60.0)
    assert stats.caught_up

    spans = tracing_support.of_trace(trace_id)
    (publish_span,) = named(spans, "flowledger.publish")
    (record_span,) = named(spans, "flowledger.process_record")
    (signal_span,) = named(spans, "SignalWorkflow:deliver_event")
    # One trace, parent to child: the caller's span, the publish, the processor's span
    # for the record, the signal the SDK's interceptor sent under it.
    assert (
        publish_span.parent is not None
        and format(publish_span.parent.span_id, "016x") == (given.split("-")[2])
    )
    assert record_span.parent is not None
    assert record_span.parent.span_id == publish_span.context.span_id  # type: ignore[union-attr]
    assert signal_span.parent is not None
    assert signal_span.parent.span_id == record_span.context.span_id  # type: ignore[union-attr]
    assert (record_span.attributes or {})["flowledger.event_id"] == str(event.event_id)

    everything = tracing_support.exporter().get_finished_spans()
    # The workflow's own spans belong to the run's trace (its start); its handling of
    # the signal links to this one.
    handled = [
        s
        for s in named(list(everything), "HandleSignal:deliver_event")
        if tracing_support.linked_to(s, trace_id)
    ]
    assert handled, "the workflow's HandleSignal span links to the event's trace"
    assert (handled[0].attributes or {})["temporalWorkflowID"] == handle.id

    # The steps the event resumed: their events went out in a span of this trace,
    # child of the publish (the signal carried the record's traceparent), linked to
    # the SDK's activity span in the run's trace.
    activity_spans = {
        span_hex(s): s for s in named(list(everything), "RunActivity:emit_runtime_events")
    }
    for emit in emits:
        assert emit.parent is not None
        assert emit.parent.span_id == publish_span.context.span_id  # type: ignore[union-attr]
        assert any(format(link.context.span_id, "016x") in activity_spans for link in emit.links)
    resumed = {span_hex(s) for s in emits}

    # Every runtime record of those steps carries the emit span's traceparent ...
    carried = {
        r.headers.get(tracing.TRACEPARENT)
        for r in read_all(traced, traced.topic(RUNTIME))
        if r.value and run_id in r.value and '"RunCompleted"' in r.value
    }
    assert len(carried) == 1
    (header,) = carried
    assert header is not None and tracing.trace_id(header) == trace_id
    assert header.split("-")[2] in resumed

    # ... and the projector's batch that applied them links to it.
    batches = [
        s
        for s in everything
        if s.name == "flowledger.projector.batch" and tracing_support.linked_to(s, trace_id)
    ]
    assert batches, "a projector batch span links to the event's trace"
    assert any(format(link.context.span_id, "016x") in resumed for b in batches for link in b.links)


async def test_dead_letter_keeps_the_records_traceparent(settings: Settings) -> None:
    traced = tracing_support.traced(settings)
    given = tracing.new_traceparent()
    from topics import clients

    producer = clients.producer(traced)
    producer.produce(
        traced.topic(EVENTS),
        key=b"poison",
        value=b"not json",
        headers=[(tracing.TRACEPARENT, given.encode()), ("origin", b"upstream")],
    )
    assert producer.flush(10) == 0
    async with processing(traced):
        letters = await until(
            lambda: read_all(traced, traced.topic(DEADLETTER)), what="the dead letter"
        )
    (letter,) = letters
    assert letter.headers[tracing.TRACEPARENT] == given
    assert letter.headers["origin"] == "upstream"
    assert letter.headers["flowledger.reason"] == "RECORD_NOT_JSON"
    (record_span,) = named(
        tracing_support.of_trace(tracing.trace_id(given)), "flowledger.process_record"
    )
    assert (record_span.attributes or {})["flowledger.refused"] == "RECORD_NOT_JSON"


def test_publish_json_prints_the_trace_each_record_carries(settings: Settings) -> None:
    from typer.testing import CliRunner

    from flowledger.cli import _register, app

    if not any(c.name == "publish" for c in app.registered_commands):
        _register()
    lines = "".join(paid(f"k-{n}").model_dump_json() + "\n" for n in range(3))
    result = CliRunner().invoke(
        app,
        ["publish", "-", "--json"],
        input=lines,
        obj={"settings": settings},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stdout
    printed = {r["event_id"]: r["trace_id"] for r in json.loads(result.stdout)}
    # Tracing off: a fresh trace per event all the same.
    assert len(set(printed.values())) == 3
    records = read_all(settings, settings.topic(EVENTS))
    carried = {
        json.loads(r.value)["event_id"]: tracing.trace_id(r.headers[tracing.TRACEPARENT])
        for r in records
        if r.value
    }
    assert carried == printed
