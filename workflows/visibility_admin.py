"""`flowledger temporal ensure`: register flowledger's search attributes on a
namespace that lacks them and report those that exist with another type (Temporal
cannot change a type; it is for an operator to decide)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, RPCStatusCode

from flowledger.errors import AuthenticationFailed, ServiceUnavailable
from flowledger.settings import Settings
from workflows.client import connect
from workflows.codes import TEMPORAL_AUTH_FAILED, TEMPORAL_UNAVAILABLE
from workflows.visibility import ATTRIBUTES, CLI_TYPES

# What the report says of each attribute.
PRESENT = "present"
ADDED = "added"
MISSING = "missing"
DIFFERS = "differs"


@dataclass(frozen=True)
class AttributeReport:
    name: str
    wanted: str
    found: str | None
    status: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (PRESENT, ADDED)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.wanted,
            "found": self.found,
            "status": self.status,
        }
        if self.error:
            body["error"] = self.error
        return body


def _type_name(value: int) -> str:
    try:
        return CLI_TYPES[SearchAttributeIndexedValueType(value)]
    except (ValueError, KeyError):
        return f"unknown({value})"


def _rpc_failure(settings: Settings, exc: RPCError) -> Exception:
    address = settings.temporal.address
    if exc.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
        return AuthenticationFailed(
            f"Temporal at {address} refused the credentials: {exc.message}",
            code=TEMPORAL_AUTH_FAILED,
        )
    return ServiceUnavailable(
        f"Temporal at {address} did not answer: {exc.message}",
        code=TEMPORAL_UNAVAILABLE,
        address=address,
    )


async def ensure(settings: Settings, *, register: bool = True) -> list[AttributeReport]:
    """One report per attribute; with `register`, the missing ones are added first."""
    client = await connect(settings)
    namespace = settings.temporal.namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        raise _rpc_failure(settings, exc) from exc
    existing = {**dict(listed.system_attributes), **dict(listed.custom_attributes)}
    missing = {name: kind for name, kind in ATTRIBUTES.items() if name not in existing}
    added_error: str | None = None
    if register and missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        name: IndexedValueType.ValueType(kind.value)
                        for name, kind in missing.items()
                    },
                )
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.UNAVAILABLE:
                raise _rpc_failure(settings, exc) from exc
            # Refused (no permission, a cloud namespace, no free slot of that type):
            # reported per attribute so the ones present still show.
            added_error = exc.message
    reports = []
    for name, kind in ATTRIBUTES.items():
        wanted = CLI_TYPES[kind]
        if name in missing:
            if register and added_error is None:
                reports.append(AttributeReport(name, wanted, None, ADDED))
            else:
                reports.append(AttributeReport(name, wanted, None, MISSING, added_error))
            continue
        found = _type_name(existing[name])
        status = PRESENT if found == wanted else DIFFERS
        reports.append(AttributeReport(name, wanted, found, status))
    return reports
