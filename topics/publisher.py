"""The publisher API: validate envelopes, put the valid ones on flowledger.events.v1,
and report every refused one with its line number and reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from opentelemetry.trace import SpanKind

from flowledger import tracing
from flowledger.errors import FlowledgerError, ServiceUnavailable
from flowledger.settings import RecordSettings, Settings
from schemas.codes import RECORD_NOT_JSON
from schemas.envelope import EventEnvelope
from topics import clients
from topics.catalogue import EVENTS
from topics.codes import PUBLISH_FAILED
from topics.producing import Outgoing, produce_and_flush
from topics.serde import RecordRefused, decode_envelope, encode


@dataclass(frozen=True)
class Published:
    line: int
    event_id: str
    partition: int
    offset: int
    # The W3C trace the record carries in its `traceparent` header.
    trace_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "event_id": self.event_id,
            "partition": self.partition,
            "offset": self.offset,
            "trace_id": self.trace_id,
        }


@dataclass(frozen=True)
class Refused:
    line: int
    error: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error}


Outcome = Published | Refused


def parse_lines(
    text: str, limits: RecordSettings | None = None
) -> list[tuple[int, EventEnvelope | RecordRefused]]:
    """One JSON document, or NDJSON (one envelope per non-blank line), each within the
    record limits the processor applies."""
    stripped = text.strip()
    items: list[tuple[int, EventEnvelope | RecordRefused]] = []
    if stripped.startswith("{") and "\n" in stripped:
        # A pretty-printed single document spans lines; try it whole first.
        try:
            items.append((1, decode_envelope(stripped, limits)))
            return items
        except RecordRefused as exc:
            if exc.code != RECORD_NOT_JSON:
                return [(1, exc)]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, decode_envelope(line, limits)))
        except RecordRefused as exc:
            items.append((number, exc))
    return items


def publish(
    settings: Settings,
    envelopes: Iterable[tuple[int, EventEnvelope]],
    *,
    topic: str | None = None,
    key: str | None = None,
    producer: Producer | None = None,
    traceparent: str | None = None,
) -> list[Published]:
    """Publish envelopes (with the line numbers they came from) and wait for every
    acknowledgement; raises ServiceUnavailable if Kafka refuses any of them. A
    long-lived caller passes its own producer instead of paying for a new one.

    Every record carries a `traceparent`: a publish span's, child of ``traceparent``
    (or of the caller's current span) when given, else the root of a new trace per
    event; with tracing off, ``traceparent`` itself or a fresh one."""
    target = topic or settings.topic(EVENTS)
    producer = producer or clients.producer(settings)
    tracer = tracing.tracer(settings.tracing)
    parent = tracing.context_of(traceparent)
    outgoing: list[Outgoing] = []
    # What each record is, for the results: its line, event id and trace id.
    items: dict[int, tuple[int, str]] = {}
    traces: dict[int, str] = {}
    for line, envelope in envelopes:
        with tracer.start_as_current_span(
            "flowledger.publish",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "flowledger.event_id": str(envelope.event_id),
                "messaging.destination": target,
            },
        ) as span:
            header = tracing.traceparent_of(span) or traceparent or tracing.new_traceparent()
        item = Outgoing(
            target,
            (key or envelope.default_key()).encode("utf-8"),
            encode(envelope),
            [(tracing.TRACEPARENT, header.encode("ascii"))],
        )
        outgoing.append(item)
        items[id(item)] = (line, str(envelope.event_id))
        traces[id(item)] = tracing.trace_id(header)
    done = produce_and_flush(producer, outgoing, settings.kafka.request_timeout_s)
    if done.failed:
        lines = [f"line {items[id(item)][0]}: {why}" for item, why in done.failed]
        raise ServiceUnavailable(
            f"Kafka did not acknowledge {len(lines)} record(s): " + "; ".join(lines[:5]),
            code=PUBLISH_FAILED,
        )
    results = [
        Published(*items[id(a.item)], a.partition, a.offset, traces[id(a.item)])
        for a in done.acknowledged
    ]
    return sorted(results, key=lambda r: r.line)


def publish_text(
    settings: Settings, text: str, *, topic: str | None = None, traceparent: str | None = None
) -> list[Outcome]:
    parsed = parse_lines(text, settings.records)
    if not parsed:
        raise RecordRefused("no event in the input", field="(input)", reason="empty")
    good = [(n, item) for n, item in parsed if isinstance(item, EventEnvelope)]
    published = (
        {p.line: p for p in publish(settings, good, topic=topic, traceparent=traceparent)}
        if good
        else {}
    )
    outcomes: list[Outcome] = []
    for number, item in parsed:
        if isinstance(item, FlowledgerError):
            outcomes.append(Refused(number, item.to_dict()))
        else:
            outcomes.append(published[number])
    return outcomes
