"""OpenTelemetry traces for every layer: the process's tracer provider (built from the
settings once, by the composition root), the tracer the code asks for, and W3C
`traceparent` text to and from Kafka headers. Nothing here connects anywhere at
import time, and with tracing off every span is a non-recording one."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flowledger.settings import TracingSettings

TRACEPARENT = "traceparent"
TRACER_NAME = "flowledger"

_PROPAGATOR = TraceContextTextMapPropagator()
_installed = False


def install(tracing: TracingSettings) -> bool:
    """The OTLP exporter's tracer provider as the process's own, when an endpoint is
    configured; once per process (OpenTelemetry refuses a second global provider).
    True when this call installed it."""
    global _installed
    if _installed or not tracing.otlp_endpoint:
        return False
    # Imported here: a process with tracing off never loads the exporter stack.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = tracing.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": tracing.service_name}))
    # The exporter only connects when the first batch of spans is sent.
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(tracing.otlp_headers) or None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed = True
    return True


def tracer(tracing: TracingSettings) -> Tracer:
    """flowledger's tracer, or one that records nothing when tracing is off, whatever
    provider the process has."""
    if not tracing.active:
        return trace.NoOpTracer()
    return trace.get_tracer(TRACER_NAME)


def text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value


def context_of(traceparent: str | bytes | None) -> Context | None:
    """The context a `traceparent` continues, or None when there is none or it is not
    a valid W3C header."""
    found = span_context_of(traceparent)
    if found is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(found))


def span_context_of(traceparent: str | bytes | None) -> SpanContext | None:
    header = text(traceparent)
    if not header:
        return None
    extracted = _PROPAGATOR.extract({TRACEPARENT: header})
    found = trace.get_current_span(extracted).get_span_context()
    return found if found.is_valid else None


def link_to(traceparent: str | bytes | None) -> Link | None:
    found = span_context_of(traceparent)
    return Link(found) if found is not None else None


def traceparent_of(span: Span) -> str | None:
    """The `traceparent` that continues ``span``; None for a non-recording one."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def new_traceparent() -> str:
    """A fresh W3C trace (sampled), for a record published with tracing off: a
    processor that traces still continues it."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


def pairs(headers: Headers) -> list[tuple[str, str | bytes | None]]:
    """A Kafka record's headers as (name, value) pairs, whichever form the client gave."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def header(headers: Headers) -> str | None:
    """The `traceparent` among a Kafka record's headers."""
    for name, value in pairs(headers):
        if name == TRACEPARENT:
            return text(value)
    return None
