"""Explanations from the log: a run's whole timeline, and the chain of records
behind one projection row (`audit why`)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from flowledger.errors import InvalidInput
from flowledger.settings import Settings
from projections import tables as t
from projections.codes import AUDIT_KEY_INVALID, AUDIT_ROW_NOT_FOUND, AUDIT_TABLE_UNKNOWN
from topics.catalogue import AUDIT, DEFINITIONS, RUNTIME
from topics.reader import ReadRecord, read_all, read_json
from workflows.codes import RUN_NOT_FOUND

RUNTIME_TABLES = {
    "workflow_runs",
    "workflow_run_steps",
    "workflow_run_waits",
    "workflow_action_invocations",
    "workflow_human_tasks",
    "workflow_run_logs",
}
# The field of a runtime event's data that names the row it changes.
IDENTIFIED_BY = {
    "workflow_run_waits": "wait_id",
    "workflow_human_tasks": "task_id",
    "workflow_run_steps": "step_path",
}
AUDIT_TABLES = {"workflow_runtime_events", "workflow_event_deliveries"}


def _link(record: ReadRecord, value: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_id": value.get("event_id"),
        "run_id": value.get("run_id"),
        "seq": value.get("seq"),
        "type": value.get("type"),
        **extra,
    }


def timeline(settings: Settings, run_id: str) -> dict[str, Any]:
    runtime = [
        (r, v) for r, v in read_json(settings, settings.topic(RUNTIME)) if v.get("run_id") == run_id
    ]
    if not runtime:
        raise InvalidInput(
            f"no runtime events for run {run_id}", code=RUN_NOT_FOUND, status=404, run_id=run_id
        )
    runtime.sort(key=lambda rv: int(rv[1].get("seq", 0)))
    events = [
        {**_link(r, v), "occurred_at": v.get("occurred_at"), "data": v.get("data")}
        for r, v in runtime
    ]
    audits = []
    for record, value in read_json(settings, settings.topic(AUDIT)):
        touching = [d for d in value.get("deliveries") or [] if d.get("run_id") == run_id]
        # Event ids are unique only within a tenant.
        trigger = any(
            e["data"].get("trigger_event_id") == value.get("event_id")
            and runtime[0][1].get("tenant") == value.get("tenant")
            for e in events
            if e["type"] == "RunStarted"
        )
        if touching or trigger:
            audits.append(
                {
                    **_link(record, value),
                    "run_id": run_id,
                    "event_type": value.get("event_type"),
                    "correlation_key": value.get("correlation_key"),
                    "received_at": value.get("received_at"),
                    "deliveries": touching,
                    "ingress": {
                        "topic": value.get("source_topic"),
                        "partition": value.get("source_partition"),
                        "offset": value.get("source_offset"),
                    },
                }
            )
    return {"run_id": run_id, "events": events, "audit": audits}


def _key_columns(table_name: str) -> list[str]:
    table = t.metadata.tables.get(table_name)
    if table is None:
        raise InvalidInput(
            f"no projection table {table_name!r}",
            code=AUDIT_TABLE_UNKNOWN,
            allowed=sorted(t.metadata.tables),
        )
    return [c.name for c in table.primary_key.columns]


def parse_key(table_name: str, key: str) -> dict[str, Any]:
    """A key is the primary key's values joined by `|` (or a JSON object)."""
    columns = _key_columns(table_name)
    if key.startswith("{"):
        try:
            given = json.loads(key)
        except ValueError:
            raise InvalidInput("the key is not JSON", code=AUDIT_KEY_INVALID) from None
        if not isinstance(given, dict) or set(given) != set(columns):
            raise InvalidInput(f"the key names {columns}", code=AUDIT_KEY_INVALID, columns=columns)
        return given
    parts = key.split("|")
    if len(parts) != len(columns):
        raise InvalidInput(
            f"{table_name} is keyed by {'|'.join(columns)}",
            code=AUDIT_KEY_INVALID,
            columns=columns,
        )
    table = t.metadata.tables[table_name]
    out: dict[str, Any] = {}
    for name, text_value in zip(columns, parts, strict=True):
        python_type = table.c[name].type.python_type
        out[name] = int(text_value) if python_type is int else text_value
    return out


def why(settings: Settings, live: Engine, table_name: str, key: str) -> dict[str, Any]:
    named = parse_key(table_name, key)
    table = t.metadata.tables[table_name]
    query = select(table)
    for name, value in named.items():
        query = query.where(table.c[name] == value)
    with live.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise InvalidInput(
            f"no row {key} in {table_name}",
            code=AUDIT_ROW_NOT_FOUND,
            status=404,
            table=table_name,
            key=named,
        )
    data = dict(row)
    last = {
        "topic": data.get("source_topic"),
        "partition": data.get("source_partition"),
        "offset": data.get("source_offset"),
        "event_id": data.get("source_event_id"),
    }
    chain: list[dict[str, Any]] = []
    if table_name in RUNTIME_TABLES:
        run_id = data.get("run_id")
        field = IDENTIFIED_BY.get(table_name)
        wanted = {field: data[field]} if field and data.get(field) else {}
        for record, value in read_json(settings, settings.topic(RUNTIME)):
            if value.get("run_id") != run_id:
                continue
            if (record.topic, record.partition) == (
                last["topic"],
                last["partition"],
            ) and record.offset > int(last["offset"] or 0):
                continue
            body = value.get("data") or {}
            relevant = (
                table_name == "workflow_runs"
                or value.get("type") == "RunStarted"
                or any(body.get(k) == v for k, v in wanted.items())
                or (
                    table_name in ("workflow_run_logs", "workflow_action_invocations")
                    and value.get("seq") == data.get("seq")
                )
            )
            if relevant:
                chain.append(_link(record, value))
        chain.sort(key=lambda c: int(c["seq"] or 0))
    elif table_name in AUDIT_TABLES:
        event_id, tenant = data.get("event_id"), data.get("tenant")
        for record, value in read_json(settings, settings.topic(AUDIT)):
            if value.get("event_id") == event_id and value.get("tenant") == tenant:
                chain.append(
                    _link(
                        record,
                        value,
                        ingress={
                            "topic": value.get("source_topic"),
                            "partition": value.get("source_partition"),
                            "offset": value.get("source_offset"),
                        },
                    )
                )
    elif table_name == "workflow_schedules":
        # Every schedule event of the schedule up to the one that last changed the row.
        for record, value in read_json(settings, settings.topic(RUNTIME)):
            if value.get("schedule_id") != data["schedule_id"] or value.get("run_id"):
                continue
            if record.offset <= int(last["offset"] or 0):
                chain.append(_link(record, value, schedule_id=data["schedule_id"]))
    elif table_name == "workflow_definitions":
        wanted_key = f"{data['tenant']}:{data['definition_id']}:{data['version']}"
        for record in read_all(settings, settings.topic(DEFINITIONS)):
            if record.key == wanted_key:
                chain.append(
                    {
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "event_id": None,
                        "run_id": None,
                        "seq": None,
                        "type": "DefinitionRecord",
                        "key": record.key,
                    }
                )
    return {
        "table": table_name,
        "key": named,
        "last_changed_by": last,
        "row": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()},
        "chain": chain,
    }
