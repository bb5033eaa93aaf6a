"""The Temporal side of processing: `deliver_event` signals and triggered starts, each
turned into a delivery outcome. Transient failures raise Transient so the caller
retries them; everything else is an outcome for the audit, never a crash."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from flowledger import retry
from flowledger.errors import AuthenticationFailed, InvalidInput
from flowledger.settings import Settings
from processors.pipeline import SignalTarget, StartTarget
from processors.triggers import MappingFailed, map_input
from workflows import control
from workflows.interpreter_workflow import InterpreterWorkflow
from workflows.messages import DeliveredEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

_PERMANENT = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.UNIMPLEMENTED,
        RPCStatusCode.UNAUTHENTICATED,
    }
)


class Transient(Exception):
    """Temporal (or Kafka) did not answer; the same call may succeed later."""


# Asked to stop while still retrying: nothing of the batch is committed.
Stopped = retry.Stopped


class StartRefused(Exception):
    """A triggered start that can never succeed as it is: the definition's mapping
    failed on this event, or its result breaks the definition's input schema."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _connection_failure(exc: Exception) -> bool:
    """Worth another try: the SDK reports a lost or refused connection as RuntimeError
    ("Failed client connect"), sockets as OSError. Anything else a call raises is a
    fault of the record or of our code, reported for that record, not retried forever."""
    if isinstance(exc, RecursionError):
        return False
    return isinstance(exc, RuntimeError | OSError | TimeoutError)


async def signal(client: Client, target: SignalTarget, event: DeliveredEvent) -> str:
    handle = client.get_workflow_handle(target.workflow_id)
    try:
        await handle.signal(InterpreterWorkflow.deliver_event, event)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            # The run ended between its wait registration and this event.
            return "workflow_closed"
        if exc.status in _PERMANENT:
            return f"failed: {exc.status.name}"
        raise Transient(str(exc)) from exc
    except Exception as exc:
        if _connection_failure(exc):
            raise Transient(str(exc)) from exc
        raise
    return "delivered"


async def start(
    settings: Settings,
    client: Client,
    target: StartTarget,
    event: dict[str, Any],
    clock: datetime,
) -> str:
    try:
        data = map_input(target.record, event, settings, clock)
        await control.start(
            settings,
            client,
            target.record,
            data,
            run_id=target.run_id,
            workflow_id=target.workflow_id,
            trigger_event_id=event["event_id"],
        )
    except MappingFailed as exc:
        raise StartRefused(exc.code, str(exc)) from exc
    except InvalidInput as exc:
        raise StartRefused(exc.code, exc.message) from exc
    except WorkflowAlreadyStartedError:
        return await _conflict(client, target)
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return await _conflict(client, target)
        if exc.status in _PERMANENT:
            return f"failed: {exc.status.name}"
        raise Transient(str(exc)) from exc
    except Exception as exc:
        if _connection_failure(exc):
            raise Transient(str(exc)) from exc
        raise
    return "started"


async def _conflict(client: Client, target: StartTarget) -> str:
    """The event's run exists: still running (a redelivery while it runs), or closed
    and refused for good by the id-reuse policy (the event was processed again after
    its run ended)."""
    try:
        description = await client.get_workflow_handle(target.workflow_id).describe()
    except RPCError as exc:
        if exc.status in _PERMANENT or exc.status == RPCStatusCode.NOT_FOUND:
            return "duplicate"
        raise Transient(str(exc)) from exc
    if description.status == WorkflowExecutionStatus.RUNNING:
        return "already_started"
    return "duplicate"


class Backoff:
    """The processor's retry policy (its settings, its stop request, a count of the
    retries for status and tests) over the one retry helper."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.initial = settings.processor.retry_initial_backoff_s
        self.cap = settings.processor.retry_max_backoff_s
        self.stop = stop
        self.retries = 0

    async def retry(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        on: tuple[type[Exception], ...] = (Transient,),
    ) -> T:
        """``call()`` until it stops raising one of ``on``, with doubling delays; a stop
        request ends the retrying after a failed attempt (Stopped)."""

        def counted() -> None:
            self.retries += 1

        return await retry.until_stopped(
            what,
            call,
            # Refused credentials fail the same way every time: stop at once.
            transient=lambda exc: isinstance(exc, on) and not isinstance(exc, AuthenticationFailed),
            stop=self.stop,
            initial=self.initial,
            cap=self.cap,
            on_retry=counted,
        )


class Lanes:
    """Effects in lanes, across calls: one workflow's effects run in the order they were
    handed over, even when they come from batches in flight at the same time; all
    workflows together at most `limit` effects in flight."""

    def __init__(self, limit: int) -> None:
        self.gate = asyncio.Semaphore(limit)
        self.tails: dict[str, asyncio.Future[None]] = {}

    async def run(self, groups: dict[str, list[Callable[[], Awaitable[None]]]]) -> None:
        lanes: list[asyncio.Future[None]] = []
        for workflow_id, calls in groups.items():
            lane = asyncio.ensure_future(self._lane(self.tails.get(workflow_id), calls))
            self.tails[workflow_id] = lane
            lane.add_done_callback(functools.partial(self._drop, workflow_id))
            lanes.append(lane)
        results = await asyncio.gather(*lanes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _lane(
        self, before: asyncio.Future[None] | None, calls: list[Callable[[], Awaitable[None]]]
    ) -> None:
        if before is not None:
            # Its outcome is its own batch's business; this lane only keeps the order.
            await asyncio.wait([before])
        for call in calls:
            async with self.gate:
                await call()

    def _drop(self, workflow_id: str, done: asyncio.Future[None]) -> None:
        if self.tails.get(workflow_id) is done:
            del self.tails[workflow_id]
