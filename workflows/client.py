"""A Temporal client with flowledger's data converter (pydantic), for anything that
starts, signals or queries runs. Importing it loads no worker code: no interpreter,
activities or actions."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from workflows.codes import TEMPORAL_UNAVAILABLE


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal.address,
            namespace=settings.temporal.namespace,
            data_converter=pydantic_data_converter,
        )
    except Exception as exc:
        raise ServiceUnavailable(
            f"Temporal at {settings.temporal.address} did not answer: {exc}",
            code=TEMPORAL_UNAVAILABLE,
        ) from exc
