"""A run a Temporal Schedule started, made concrete inside the workflow, pure.

The schedule's action carries one RunInput for every run it starts (the pinned
definition and the `input` expression map, no run id). Temporal starts each run under
`<schedule action id>-<scheduled time>`, so the run id is derived from that workflow
id (the same on every replay) and the input is evaluated with
`system.scheduled_at`, the time the schedule meant, not the time the run began."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from workflows.expressions import ExpressionError
from workflows.expressions import compile as compile_expression
from workflows.messages import RunInput

SCHEDULED_RUN_NAMESPACE = uuid.UUID("3f0b8f9a-8d2e-5b71-a6c4-2e9d7c1b5a40")


def schedule_id(tenant: str, definition_id: str, name: str) -> str:
    return f"flowledger:schedule:{tenant}:{definition_id}:{name}"


def scheduled_run_id(workflow_id: str) -> str:
    return str(uuid.uuid5(SCHEDULED_RUN_NAMESPACE, workflow_id))


def needs_resolving(run: RunInput) -> bool:
    return run.schedule_id is not None and not run.run_id


def time_from_workflow_id(workflow_id: str, action_id: str) -> datetime | None:
    """The scheduled time Temporal appends to the action's id (`<id>-<RFC 3339>`)."""
    if not workflow_id.startswith(action_id + "-"):
        return None
    stamp = workflow_id[len(action_id) + 1 :]
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def resolve(run: RunInput, workflow_id: str, scheduled_at: datetime) -> RunInput:
    """The run as if started by hand: its id, its workflow id, its scheduled time and
    its input. An input expression that fails leaves the input empty and the failure
    in `input_error`, which the run reports as its first step's error."""
    at = scheduled_at.astimezone(UTC)
    run_id = scheduled_run_id(workflow_id)
    system = {
        "run_id": run_id,
        "tenant": run.tenant,
        "definition_id": run.definition_id,
        "version": run.version,
        "definition_hash": run.definition_hash,
        "schedule_id": run.schedule_id,
        "scheduled_at": at.isoformat().replace("+00:00", "Z"),
    }
    data: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    for name, value in (run.schedule_input or {}).items():
        if isinstance(value, dict) and set(value) == {"$expr"}:
            try:
                options = run.expressions
                compiled = compile_expression(
                    str(value["$expr"]),
                    extra_functions=options.extra_functions,
                    step_budget=options.step_budget,
                    max_output_chars=options.max_output_chars,
                )
                data[name] = compiled.evaluate({"system": system}, at)
            except ExpressionError as exc:
                data, error = (
                    {},
                    {
                        "code": exc.code,
                        "message": f"input.{name}: {exc.message}",
                    },
                )
                break
        else:
            data[name] = value
    return run.model_copy(
        update={
            "run_id": run_id,
            "workflow_id": workflow_id,
            "scheduled_at": at,
            "input": data,
            "schedule_input": None,
            "input_error": error,
        }
    )
