"""Records that cross a process boundary (pydantic v2, frozen, extra fields refused)."""

from schemas.audit import AuditRecord, Delivery
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from schemas.runtime import RUNTIME_EVENT_ADAPTER, RuntimeEvent, runtime_event_id

__all__ = [
    "RUNTIME_EVENT_ADAPTER",
    "AuditRecord",
    "DefinitionRecord",
    "Delivery",
    "EventEnvelope",
    "RuntimeEvent",
    "runtime_event_id",
]
