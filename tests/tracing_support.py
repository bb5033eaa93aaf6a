"""One in-memory span exporter for the whole test process: OpenTelemetry takes a
global tracer provider once per process, so every tracing test shares this one and
tells its own spans apart by trace id."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowledger.settings import Settings

_exporter: InMemorySpanExporter | None = None


def exporter() -> InMemorySpanExporter:
    global _exporter
    if _exporter is None:
        _exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    return _exporter


def traced(settings: Settings) -> Settings:
    """The settings with tracing on, spans going to the in-memory exporter."""
    exporter()
    return settings.model_copy(
        update={"tracing": settings.tracing.model_copy(update={"enabled": True})}
    )


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def of_trace(trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter().get_finished_spans() if hex_trace(s) == trace_id]


def linked_to(span: ReadableSpan, trace_id: str) -> bool:
    return any(format(link.context.trace_id, "032x") == trace_id for link in span.links)
