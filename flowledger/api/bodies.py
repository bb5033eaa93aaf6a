"""Request bodies read whole, up to API__MAX_BODY_BYTES, and JSON bodies parsed within
the same record limits as the CLI's inputs."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from flowledger.codes import API_BODY_TOO_LARGE
from flowledger.errors import FlowledgerError, InvalidInput
from flowledger.operations import json_input
from flowledger.settings import Settings


class BodyTooLarge(FlowledgerError):
    code = API_BODY_TOO_LARGE
    status = 413


async def read(request: Request, settings: Settings) -> bytes:
    limit = settings.api.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is over {limit} bytes", limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(raw: bytes, settings: Settings, what: str = "the body") -> dict[str, Any]:
    document = json_input.parse(raw, what, settings.records, status=422)
    if not isinstance(document, dict):
        raise InvalidInput(f"{what} must be a JSON object", status=422)
    return document
