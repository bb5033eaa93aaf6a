"""The operator audit record: one run-control, schedule or redrive request, or an event
batch or definition published over the API; who made it, and what became of it, on
flowledger.operators.v1 (keyed by action_id)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field

from schemas.base import NonEmptyStr, Record, Timestamp

OperatorActionName = Literal[
    "start",
    "cancel",
    "terminate",
    "rerun",
    "task_complete",
    "resume",
    "retry",
    "requeue",
    "schedule_pause",
    "schedule_unpause",
    "schedule_trigger",
    "schedule_backfill",
    "redrive",
    "publish",
    "definition_publish",
]
Outcome = Literal["accepted", "refused"]


class OperatorAction(Record):
    action_id: uuid.UUID
    action: OperatorActionName
    requested_by: NonEmptyStr
    requested_at: Timestamp
    outcome: Outcome
    tenant: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    reason: str | None = None
    # the refusal's error code and message; None when accepted
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
