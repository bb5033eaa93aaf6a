"""The record `definitions publish` writes to flowledger.definitions.v1 (compacted,
keyed by tenant:definition_id:version)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas.base import NonEmptyStr, Record, Timestamp


class DefinitionRecord(Record):
    tenant: NonEmptyStr
    definition_id: NonEmptyStr
    version: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the canonical JSON.")
    published_at: Timestamp
    definition: dict[str, Any]

    def key(self) -> str:
        return f"{self.tenant}:{self.definition_id}:{self.version}"
