"""The ingress event envelope: the JSON value publishers put on flowledger.events.v1."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field, field_validator, model_validator

from schemas.base import NonEmptyStr, Record, Timestamp


class EventEnvelope(Record):
    event_id: uuid.UUID = Field(description="De-duplication key of the event.")
    event_type: NonEmptyStr = Field(description="Canonical name matched by waits and triggers.")
    event_name: str | None = Field(default=None, description="Display name; event_type if absent.")
    tenant: NonEmptyStr
    occurred_at: Timestamp = Field(description="ISO-8601 time with an explicit UTC offset.")
    workflow_correlation_key: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    user_id: str | None = None
    source: str | None = None
    payload_schema_ref: str | None = None
    schema_version: int = Field(default=1, ge=1)

    @field_validator("tenant", "event_type")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> EventEnvelope:
        if self.event_name is None:
            object.__setattr__(self, "event_name", self.event_type)
        return self

    def default_key(self) -> str:
        return f"{self.tenant}:{self.event_id}"
