"""The JSON-lines log format: one object a line, with the ids where known."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

from flowledger.logs import JsonFormatter, configure, log_context
from flowledger.settings import Settings


def _record(message: str = "hello %s", **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "flowledger.test", logging.WARNING, __file__, 1, message, ("x",), None
    )
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_json_object_with_the_basic_fields() -> None:
    line = JsonFormatter().format(_record())
    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == "hello x"
    assert body["level"] == "WARNING"
    assert body["logger"] == "flowledger.test"
    assert body["time"].endswith("+00:00")
    # Unknown ids are left out rather than written as null.
    assert not {"run_id", "event_id", "trace_id"} & set(body)


def test_ids_come_from_the_log_context() -> None:
    with log_context(run_id="r-1", event_id="e-1"):
        body = json.loads(JsonFormatter().format(_record()))
    assert body["run_id"] == "r-1"
    assert body["event_id"] == "e-1"
    assert "run_id" not in json.loads(JsonFormatter().format(_record()))


def test_the_trace_of_the_current_span_is_written() -> None:
    formatter = JsonFormatter(current_trace=lambda: ("a" * 32, "b" * 16))
    body = json.loads(formatter.format(_record()))
    assert (body["trace_id"], body["span_id"]) == ("a" * 32, "b" * 16)


def test_extra_fields_win_and_are_kept() -> None:
    with log_context(run_id="outer"):
        body = json.loads(JsonFormatter().format(_record(run_id="inner", partition=3)))
    assert body["run_id"] == "inner"
    assert body["partition"] == 3


def test_the_run_of_a_workflow_log_comes_from_the_sdk_details() -> None:
    details = {"workflow_id": "flowledger:run:abc", "run_id": "temporal-run"}
    body = json.loads(JsonFormatter().format(_record(temporal_workflow=details)))
    assert body["run_id"] == "abc"
    assert "temporal_workflow" not in body


def test_an_exception_is_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    body = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in body["exception"]


def test_configure_follows_the_log_format_setting() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        out = io.StringIO()
        configure(Settings.model_construct(log_format="json"), out)
        with log_context(event_id="e-9"):
            logging.getLogger("flowledger.x").info("started %d", 1)
        body = json.loads(out.getvalue().splitlines()[-1])
        assert body == {**body, "message": "started 1", "event_id": "e-9", "level": "INFO"}
        text = io.StringIO()
        configure(Settings.model_construct(log_format="text"), text)
        logging.getLogger("flowledger.x").info("plain")
        assert text.getvalue().rstrip().endswith("INFO flowledger.x plain")
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])


def test_log_format_is_a_setting(monkeypatch: Any) -> None:
    monkeypatch.setenv("FLOWLEDGER_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
