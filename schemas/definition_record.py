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
        return definition_key(self.tenant, self.definition_id, self.version)


def definition_key(tenant: str, definition_id: str, version: int) -> str:
    """The Kafka key of a published definition: ``tenant:definition_id:version``."""
    return f"{tenant}:{definition_id}:{version}"


def parse_definition_key(key: str) -> tuple[str, str, int] | None:
    """(tenant, definition_id, version) of a key; None when it does not parse. The
    version is split off the right, since a tenant or an id may itself contain ':'."""
    parts = key.rsplit(":", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])
