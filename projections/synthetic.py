"""Deterministic generated runtime, audit and definition records: a realistic mix for
tests and the benchmark (runs with steps, actions, waits, human tasks, logs and a
completion), without a workflow engine."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.codes import CORRELATION_MISSING
from schemas.audit import AuditRecord, Delivery
from schemas.definition_record import DefinitionRecord
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent, runtime_event_id
from topics.catalogue import AUDIT, DEFINITIONS, RUNTIME
from topics.serde import encode

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Generated:
    """One record to produce: catalogue topic base name, key, value."""

    base: str
    key: bytes
    value: bytes


def runtime_event(
    run_id: str, seq: int, type_: str, data: dict[str, Any], tenant: str = "acme"
) -> RuntimeEvent:
    return RUNTIME_EVENT_ADAPTER.validate_python(
        {
            "event_id": str(runtime_event_id(run_id, seq)),
            "run_id": run_id,
            "tenant": tenant,
            "seq": seq,
            "occurred_at": (EPOCH + timedelta(seconds=seq)).isoformat(),
            "type": type_,
            "data": data,
        }
    )


def definition_record(tenant: str, definition_id: str, version: int) -> DefinitionRecord:
    body = {
        "id": definition_id,
        "version": version,
        "tenant": tenant,
        "name": f"{definition_id} v{version}",
        "trigger": {"type": "event", "event_type": f"{definition_id}.requested"},
        "steps": [{"type": "assign", "assign": {"vars.x": 1}}],
    }
    digest = hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()
    return DefinitionRecord(
        tenant=tenant,
        definition_id=definition_id,
        version=version,
        hash=digest,
        published_at=EPOCH,
        definition=body,
    )


def run_events(
    run_id: str, rng: random.Random, tenant: str = "acme", steps: tuple[int, int] = (2, 6)
) -> list[RuntimeEvent]:
    """One run's events in seq order: a mix of steps (between ``steps`` bounds),
    actions, waits, logs and an end; about 3.7 events a step plus two."""
    events: list[RuntimeEvent] = []

    def emit(type_: str, data: dict[str, Any]) -> None:
        events.append(runtime_event(run_id, len(events) + 1, type_, data, tenant))

    definition_id = f"def-{rng.randrange(5)}"
    emit(
        "RunStarted",
        {
            "definition_id": definition_id,
            "version": 1,
            "definition_hash": "0" * 64,
            "input": {"order": rng.randrange(10_000), "items": [1, 2, 3]},
        },
    )
    for index in range(rng.randint(*steps)):
        path = f"root.steps[{index}]"
        kind = rng.choice(["assign", "action.call", "event.wait", "human.task", "assign"])
        emit("StepStarted", {"step_path": path, "step_type": kind})
        if kind == "action.call":
            emit(
                "ActionInvocation",
                {
                    "invocation_id": f"{run_id}-a{index}",
                    "step_path": path,
                    "action": "http.post",
                    "version": 1,
                    "input": {"url": "https://example.test"},
                    "status": "SUCCEEDED",
                    "output": {"ok": True},
                },
            )
        elif kind == "event.wait":
            wait_id = f"w{index}"
            emit(
                "WaitCreated",
                {
                    "wait_id": wait_id,
                    "wait_type": "event",
                    "step_path": path,
                    "event_type": "order.paid",
                    "correlation_key": f"order-{run_id}",
                },
            )
            resolution = rng.choice(["RESOLVED", "RESOLVED", "TIMED_OUT"])
            emit(
                "WaitResolved",
                {
                    "wait_id": wait_id,
                    "resolution": resolution,
                    "matched_event_id": f"evt-{run_id}-{index}"
                    if resolution == "RESOLVED"
                    else None,
                },
            )
        elif kind == "human.task":
            task_id = f"{run_id}-t{index}"
            emit(
                "WaitCreated",
                {
                    "wait_id": f"h{index}",
                    "wait_type": "human",
                    "step_path": path,
                    "task_id": task_id,
                },
            )
            emit(
                "HumanTaskCreated",
                {"task_id": task_id, "step_path": path, "task_type": "approve", "title": "OK?"},
            )
            emit(
                "HumanTaskCompleted",
                {"task_id": task_id, "response": {"approved": True}, "completed_by": "ann"},
            )
            emit("WaitResolved", {"wait_id": f"h{index}", "resolution": "RESOLVED"})
        if rng.random() < 0.3:
            emit("RunLog", {"message": f"step {index} done", "details": {"index": index}})
        emit("StepCompleted", {"step_path": path, "step_type": kind, "status": "SUCCEEDED"})
    final = rng.choice(["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", "CANCELED", None])
    if final == "FAILED":
        emit(
            "RunCompleted",
            {
                "status": "FAILED",
                "error": {"category": "ActionError", "code": "HTTP_500", "message": "boom"},
            },
        )
    elif final is not None:
        emit("RunCompleted", {"status": final, "output": {"done": True}})
    return events


def audit_record(index: int, run_id: str | None, partition: int = 0) -> AuditRecord:
    deliveries = []
    if run_id is not None:
        deliveries.append(Delivery(run_id=run_id, wait_id="w0", kind="signal", outcome="delivered"))
    return AuditRecord(
        event_id=f"00000000-0000-4000-8000-{index:012d}",
        event_type="order.paid",
        tenant="acme",
        occurred_at=EPOCH.isoformat(),
        payload={"n": index},
        correlation_key=f"order-{run_id}" if run_id else None,
        correlation_source="explicit" if run_id else "missing",
        error_code=None if run_id else CORRELATION_MISSING,
        deliveries=deliveries,
        received_at=EPOCH + timedelta(milliseconds=index),
        source_topic="flowledger.events.v1",
        source_partition=partition,
        source_offset=index,
    )


def stream(
    runs: int,
    seed: int = 7,
    audits: int = 0,
    definitions: int = 0,
    steps: tuple[int, int] = (2, 6),
) -> Iterator[Generated]:
    """Runtime events of ``runs`` runs, interleaved across runs (each run's own order
    kept), then ``audits`` audit records and ``definitions`` definitions."""
    rng = random.Random(seed)
    per_run = [run_events(f"run-{i:06d}", rng, steps=steps) for i in range(runs)]
    cursors = [0] * runs
    live = list(range(runs))
    while live:
        pick = rng.randrange(len(live))
        run = live[pick]
        event = per_run[run][cursors[run]]
        cursors[run] += 1
        if cursors[run] == len(per_run[run]):
            live[pick] = live[-1]
            live.pop()
        yield Generated(RUNTIME, event.run_id.encode(), RUNTIME_EVENT_ADAPTER.dump_json(event))
    for index in range(audits):
        run_id = f"run-{index % max(runs, 1):06d}" if index % 4 else None
        record = audit_record(index, run_id)
        yield Generated(AUDIT, f"acme:{record.event_id}".encode(), encode(record))
    for index in range(definitions):
        d = definition_record("acme", f"def-{index}", 1)
        yield Generated(DEFINITIONS, d.key().encode(), encode(d))
