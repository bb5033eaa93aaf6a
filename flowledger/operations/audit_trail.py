"""The operator audit of one request: who made it, and its outcome (accepted, or
refused with the error's code), written to flowledger.operators.v1 once the request
is done, whether it came from the CLI or the API."""

from __future__ import annotations

import getpass
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from projections import lookups
from schemas.operator import OperatorAction
from topics import operator_log

log = logging.getLogger(__name__)

# What to do when Kafka does not take the audit record: the request's answer stays
# what it is; the caller says where the warning goes.
Unrecorded = Callable[[FlowledgerError], None]


def default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


@dataclass
class Request:
    """One request being made; the operation fills in what it learns on the way."""

    action: str
    requested_by: str
    reason: str | None = None
    tenant: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _log_unrecorded(error: FlowledgerError) -> None:
    log.warning("operator audit not recorded: %s: %s", error.code, error.message)


@contextmanager
def audited(
    settings: Settings,
    request: Request,
    *,
    passthrough: tuple[type[BaseException], ...] = (),
    unrecorded: Unrecorded = _log_unrecorded,
) -> Iterator[Request]:
    """Record ``request`` with its outcome once the body is done. ``passthrough`` are
    exceptions that are not outcomes (the CLI's own exit)."""
    try:
        yield request
    except FlowledgerError as exc:
        _write(settings, request, "refused", exc.code, exc.message, unrecorded)
        raise
    except Exception as exc:
        # Not an answer the operation knows (a bug, an SDK error): still a request made.
        if not isinstance(exc, passthrough):
            _write(settings, request, "refused", type(exc).__name__, str(exc), unrecorded)
        raise
    _write(settings, request, "accepted", None, None, unrecorded)


def _write(
    settings: Settings,
    request: Request,
    outcome: str,
    code: str | None,
    message: str | None,
    unrecorded: Unrecorded,
) -> None:
    if request.tenant is None and request.run_id is not None:
        request.tenant = lookups.tenant_of(settings.database_url(), request.run_id)
    record = OperatorAction(
        action_id=uuid.uuid4(),
        action=request.action,
        requested_by=request.requested_by,
        requested_at=request.requested_at,
        outcome=outcome,
        tenant=request.tenant,
        run_id=request.run_id,
        task_id=request.task_id,
        reason=request.reason,
        code=code,
        message=message,
        details=request.details,
    )
    try:
        operator_log.record(settings, record)
    except FlowledgerError as exc:
        unrecorded(exc)
