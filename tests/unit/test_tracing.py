"""Tracing off unless configured, and the traceparent headers the components pass on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from typer.testing import CliRunner

from flowledger import tracing
from flowledger.cli import _register, app
from flowledger.settings import Settings, TracingSettings
from processors import deadletter
from processors.pipeline import IngressRecord
from projections.changes import Coordinates
from projections.pipeline import Pipeline
from projections.records import Incoming
from schemas.bounded_json import RecordRefused
from tests import tracing_support
from topics.producing import Outgoing, Round
from topics.publisher import Published, publish

if not any(c.name == "publish" for c in app.registered_commands):
    _register()

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENVELOPE = {
    "event_id": "6f1c1c8e-7a4b-4c1e-9d3a-2b1f0e9c8d7a",
    "event_type": "order.paid",
    "tenant": "acme",
    "occurred_at": "2026-01-01T00:00:00Z",
    "payload": {},
}


def test_off_unless_an_exporter_is_configured() -> None:
    assert not TracingSettings().active
    assert TracingSettings(otlp_endpoint="http://127.0.0.1:4318").active
    assert not TracingSettings(otlp_endpoint="http://127.0.0.1:4318", enabled=False).active
    assert TracingSettings(enabled=True).active
    # Nothing configured: nothing installed.
    assert not tracing.install(TracingSettings())


def test_settings_from_the_environment() -> None:
    env = {
        "FLOWLEDGER_TRACING__OTLP_ENDPOINT": "http://collector:4318",
        "FLOWLEDGER_TRACING__SERVICE_NAME": "flowledger-processor",
    }
    with mock.patch.dict("os.environ", env):
        found = Settings().tracing
    assert found.otlp_endpoint == "http://collector:4318"
    assert found.service_name == "flowledger-processor"
    assert found.otlp_protocol == "http/protobuf"


def acknowledging(captured: list[Outgoing]) -> Any:
    def produce_and_flush(_producer: object, items: list[Outgoing], _timeout: float) -> Round:
        captured.extend(items)
        done = Round()
        from topics.producing import Acknowledged

        done.acknowledged = [Acknowledged(item, 0, n) for n, item in enumerate(items)]
        return done

    return produce_and_flush


def test_with_tracing_off_nothing_is_exported_yet_each_record_has_a_trace() -> None:
    exporter = tracing_support.exporter()
    before = len(exporter.get_finished_spans())
    captured: list[Outgoing] = []
    from schemas.envelope import EventEnvelope

    envelope = EventEnvelope.model_validate(ENVELOPE)
    with mock.patch("topics.publisher.produce_and_flush", acknowledging(captured)):
        results = publish(Settings(), [(1, envelope), (2, envelope)], producer=mock.Mock())
    assert len(exporter.get_finished_spans()) == before
    headers = [tracing.header(item.headers) for item in captured]
    assert all(h is not None and tracing.span_context_of(h) is not None for h in headers)
    # A trace per event, its id in the result.
    assert len({r.trace_id for r in results}) == 2
    assert [r.trace_id for r in results] == [tracing.trace_id(h or "") for h in headers]

    given = tracing.new_traceparent()
    captured.clear()
    with mock.patch("topics.publisher.produce_and_flush", acknowledging(captured)):
        results = publish(Settings(), [(1, envelope)], producer=mock.Mock(), traceparent=given)
    assert tracing.header(captured[0].headers) == given
    assert results[0].trace_id == tracing.trace_id(given)


def test_with_tracing_on_the_publish_span_continues_a_given_trace() -> None:
    settings = tracing_support.traced(Settings())
    given = tracing.new_traceparent()
    captured: list[Outgoing] = []
    from schemas.envelope import EventEnvelope

    envelope = EventEnvelope.model_validate(ENVELOPE)
    with mock.patch("topics.publisher.produce_and_flush", acknowledging(captured)):
        publish(settings, [(1, envelope)], producer=mock.Mock(), traceparent=given)
    (span,) = tracing_support.of_trace(tracing.trace_id(given))
    assert span.name == "flowledger.publish"
    assert span.parent is not None and format(span.parent.span_id, "016x") == given.split("-")[2]
    header = tracing.header(captured[0].headers)
    assert header is not None and header.split("-")[2] == format(span.context.span_id, "016x")  # type: ignore[union-attr]


def test_publish_json_prints_each_events_trace_id(tmp_path: Any) -> None:
    source = tmp_path / "events.ndjson"
    source.write_text(json.dumps(ENVELOPE) + "\n", encoding="utf-8")
    given = tracing.new_traceparent()
    published = [Published(1, ENVELOPE["event_id"], 0, 5, tracing.trace_id(given))]
    with mock.patch("flowledger.cli.publish.publish_text", return_value=published) as call:
        result = CliRunner().invoke(app, ["publish", str(source), "--json", "--traceparent", given])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["trace_id"] == tracing.trace_id(given)
    assert call.call_args.kwargs["traceparent"] == given


def test_publish_refuses_a_malformed_traceparent(tmp_path: Any) -> None:
    source = tmp_path / "events.ndjson"
    source.write_text(json.dumps(ENVELOPE) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["publish", str(source), "--json", "--traceparent", "nope"])
    assert result.exit_code == 2
    assert "TRACEPARENT_INVALID" in result.output


def test_dead_letter_keeps_the_original_headers_first() -> None:
    given = tracing.new_traceparent()
    record = IngressRecord(
        "events",
        1,
        4,
        b"k",
        b"not json",
        T0,
        ((tracing.TRACEPARENT, given.encode()), ("flowledger.reason", b"OLD"), ("x", None)),
    )
    refused = RecordRefused("not JSON", code="RECORD_NOT_JSON", field="(record)")
    found = deadletter.headers(record, refused, Settings().records)
    assert found[:2] == [(tracing.TRACEPARENT, given.encode()), ("x", None)]
    assert [v for n, v in found if n == "flowledger.reason"] == [b"RECORD_NOT_JSON"]


def test_the_projector_batch_links_every_traced_record() -> None:
    from opentelemetry import trace

    exporter = tracing_support.exporter()
    a, b = tracing.new_traceparent(), tracing.new_traceparent()
    batch = [
        Incoming("runtime", Coordinates("rt", 0, 0), b"r", b"{}", a),
        Incoming("runtime", Coordinates("rt", 0, 1), b"r", b"{}", None),
        Incoming("runtime", Coordinates("rt", 0, 2), b"r", b"{}", b),
    ]
    pipeline = Pipeline(mock.Mock(), mock.Mock(), retry_timeout_s=1, tracer=trace.get_tracer("t"))
    with pipeline._batch_span(batch) as recording:
        assert recording.is_recording()
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if tracing_support.linked_to(s, tracing.trace_id(a))
    ]
    assert span.name == "flowledger.projector.batch"
    assert tracing_support.linked_to(span, tracing.trace_id(b))
    assert (span.attributes or {})["flowledger.traced_records"] == 2
    # Off (the default tracer): a span that records nothing.
    quiet = Pipeline(mock.Mock(), mock.Mock(), retry_timeout_s=1)
    before = len(exporter.get_finished_spans())
    with quiet._batch_span(batch) as silent:
        assert not silent.is_recording()
    assert len(exporter.get_finished_spans()) == before


def test_traceparent_text() -> None:
    given = tracing.new_traceparent()
    assert tracing.span_context_of(given.encode()) is not None
    assert tracing.span_context_of("00-" + "0" * 32 + "-" + "0" * 16 + "-01") is None
    assert tracing.header({"traceparent": given.encode()}) == given
    assert tracing.header([("other", b"1")]) is None


def test_an_otlp_endpoint_installs_an_exporter_that_sends_to_it(tmp_path: Any) -> None:
    """In a process of its own (a provider is installed once per process): the spans
    reach the configured collector's /v1/traces, with the service name."""
    import http.server
    import subprocess
    import sys
    import threading

    received: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = (
        "from opentelemetry import trace\n"
        "from flowledger import tracing\n"
        "from flowledger.settings import Settings\n"
        "s = Settings().tracing\n"
        "assert tracing.install(s) and not tracing.install(s)\n"
        "with tracing.tracer(s).start_as_current_span('probe-span'):\n"
        "    pass\n"
        "trace.get_tracer_provider().shutdown()\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "FLOWLEDGER_TRACING__OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "FLOWLEDGER_TRACING__SERVICE_NAME": "probe-service",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, timeout=60, cwd=tmp_path
        )
    finally:
        server.shutdown()
        thread.join(10)
    assert done.returncode == 0, done.stderr.decode()
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]
    assert b"probe-span" in body and b"probe-service" in body
