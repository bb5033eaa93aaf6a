"""Log output of the long-running commands: plain text, or JSON lines (`log_format`)
with the run, event and trace a record is about wherever they are known."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from flowledger.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
RUN_WORKFLOW_PREFIX = "flowledger:run:"

_run_id: ContextVar[str | None] = ContextVar("flowledger_log_run_id", default=None)
_event_id: ContextVar[str | None] = ContextVar("flowledger_log_event_id", default=None)

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@contextmanager
def log_context(*, run_id: str | None = None, event_id: str | None = None) -> Iterator[None]:
    """Records logged inside (in this task or thread) carry these ids."""
    tokens = []
    if run_id is not None:
        tokens.append((_run_id, _run_id.set(run_id)))
    if event_id is not None:
        tokens.append((_event_id, _event_id.set(event_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _run_of_workflow(workflow_id: object) -> str | None:
    text = str(workflow_id or "")
    return text[len(RUN_WORKFLOW_PREFIX) :] if text.startswith(RUN_WORKFLOW_PREFIX) else None


def _temporal_run_id(record: logging.LogRecord) -> str | None:
    """The flowledger run of a record logged by workflow or activity code: the SDK's
    loggers attach the workflow's details, and an activity's own module logger runs
    inside the activity's context."""
    for attribute in ("temporal_workflow", "temporal_activity"):
        details = getattr(record, attribute, None)
        if isinstance(details, dict) and (run := _run_of_workflow(details.get("workflow_id"))):
            return run
    try:
        from temporalio import activity
    except ImportError:
        return None
    if activity.in_activity():
        return _run_of_workflow(activity.info().workflow_id)
    return None


def _trace_ids() -> Callable[[], tuple[str, str] | None]:
    """The current OpenTelemetry span's trace and span ids, when OpenTelemetry is
    installed and a span is current."""
    try:
        from opentelemetry import trace
    except ImportError:
        return lambda: None

    def current() -> tuple[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

    return current


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids where known
    (absent otherwise), the exception, and whatever `extra=` gave."""

    def __init__(self, current_trace: Callable[[], tuple[str, str] | None] | None = None) -> None:
        super().__init__()
        self._trace = current_trace or _trace_ids()

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None) or _run_id.get() or _temporal_run_id(record)
        event_id = getattr(record, "event_id", None) or _event_id.get()
        if run_id:
            body["run_id"] = str(run_id)
        if event_id:
            body["event_id"] = str(event_id)
        trace = self._trace()
        if trace is not None:
            body["trace_id"], body["span_id"] = trace
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in body and not key.startswith("temporal_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return json.dumps(body, default=str, ensure_ascii=False)


def configure(settings: Settings, stream: TextIO | None = None) -> None:
    """The root logger of a long-running command, in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
