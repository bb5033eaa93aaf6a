"""The built-in actions: core.noop, core.log, core.emit_event, core.http_request."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import EventEnvelope
from topics.catalogue import EVENTS
from topics.publisher import publish
from workflows.actions.spec import ActionContext, ActionFailed, ActionSpec
from workflows.codes import (
    EMIT_FAILED,
    HTTP_HOST_NOT_ALLOWED,
    HTTP_REQUEST_FAILED,
    HTTP_SERVER_ERROR,
    HTTP_TIMEOUT,
)

EMIT_NAMESPACE = uuid.UUID("0c3f4d52-8b7e-5f61-9a2d-3e4b5c6d7e8f")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class NoopInput(_In):
    value: Any = None


class NoopOutput(_Out):
    value: Any = None


async def _noop(data: BaseModel, ctx: ActionContext) -> BaseModel:
    assert isinstance(data, NoopInput)
    return NoopOutput(value=data.value)


class LogInput(_In):
    message: str
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    details: dict[str, Any] = Field(default_factory=dict)


class LogOutput(_Out):
    message: str
    level: str
    details: dict[str, Any] = Field(default_factory=dict)


async def _log(data: BaseModel, ctx: ActionContext) -> BaseModel:
    assert isinstance(data, LogInput)
    return LogOutput(message=data.message, level=data.level, details=data.details)


class EmitInput(_In):
    event_type: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    workflow_correlation_key: str | None = None
    event_name: str | None = None


class EmitOutput(_Out):
    event_id: str
    topic: str
    partition: int
    offset: int


def emitted_event_id(run_id: str, step_path: str, iteration: str) -> uuid.UUID:
    """Derived from where in the run the emit happened, so a retried activity
    publishes the same event id and the processor drops the copy."""
    return uuid.uuid5(EMIT_NAMESPACE, f"{run_id}|{step_path}|{iteration}")


async def _emit(data: BaseModel, ctx: ActionContext) -> BaseModel:
    assert isinstance(data, EmitInput)
    envelope = EventEnvelope(
        event_id=emitted_event_id(ctx.run_id, ctx.step_path, ctx.iteration),
        event_type=data.event_type,
        event_name=data.event_name,
        tenant=ctx.tenant,
        occurred_at=datetime.now(UTC),
        workflow_correlation_key=data.workflow_correlation_key,
        payload=data.payload,
        source=f"flowledger:run:{ctx.run_id}",
    )
    try:
        # publish() waits for Kafka's acknowledgement (up to the request timeout): in a
        # thread, so the worker's event loop keeps heartbeating and running tasks.
        published = await asyncio.to_thread(
            publish, ctx.settings, [(1, envelope)], producer=ctx.resources.get("producer")
        )
    except Exception as exc:
        raise ActionFailed(f"publishing {data.event_type} failed: {exc}", code=EMIT_FAILED) from exc
    first = published[0]
    return EmitOutput(
        event_id=str(envelope.event_id),
        topic=ctx.settings.topic(EVENTS),
        partition=first.partition,
        offset=first.offset,
    )


class HttpInput(_In):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    timeout_s: float | None = Field(default=None, gt=0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HttpOutput(_Out):
    status: int
    headers: dict[str, str]
    json_body: Any = Field(default=None, alias="json")
    text: str | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


async def _http(data: BaseModel, ctx: ActionContext) -> BaseModel:
    assert isinstance(data, HttpInput)
    host = urlsplit(data.url).hostname or ""
    allowed = ctx.settings.actions.http_allowed_hosts
    if host not in allowed:
        raise ActionFailed(
            f"host {host!r} is not on the allow-list",
            code=HTTP_HOST_NOT_ALLOWED,
            retryable=False,
            host=host,
        )
    timeout = data.timeout_s or ctx.settings.actions.http_timeout_s
    headers = {"Idempotency-Key": ctx.idempotency_key, **data.headers}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            reply = await client.request(
                data.method, data.url, headers=headers, json=data.json_body
            )
    except httpx.TimeoutException as exc:
        raise ActionFailed(f"{data.method} {data.url} timed out", code=HTTP_TIMEOUT) from exc
    except httpx.HTTPError as exc:
        raise ActionFailed(
            f"{data.method} {data.url} failed: {exc}", code=HTTP_REQUEST_FAILED
        ) from exc
    if reply.status_code >= 500:
        raise ActionFailed(
            f"{data.method} {data.url} answered {reply.status_code}",
            code=HTTP_SERVER_ERROR,
            status=reply.status_code,
        )
    body: dict[str, Any] = {"status": reply.status_code, "headers": dict(reply.headers)}
    try:
        body["json"] = reply.json()
    except ValueError:
        body["text"] = reply.text
    return HttpOutput.model_validate(body)


BUILTINS: tuple[ActionSpec, ...] = (
    ActionSpec("core.noop", 1, NoopInput, NoopOutput, _noop, "does nothing; echoes value"),
    ActionSpec(
        "core.log", 1, LogInput, LogOutput, _log, "writes a RunLog entry", emits_run_log=True
    ),
    ActionSpec(
        "core.emit_event",
        1,
        EmitInput,
        EmitOutput,
        _emit,
        "publishes an ingress event for the run's tenant",
    ),
    ActionSpec(
        "core.http_request",
        1,
        HttpInput,
        HttpOutput,
        _http,
        "an HTTP request to an allow-listed host",
    ),
)
