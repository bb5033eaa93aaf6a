"""The Temporal side's shell: the client (pydantic data converter) and the worker
that hosts the interpreter workflow and its activities."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from flowledger.errors import ServiceUnavailable
from flowledger.settings import Settings
from workflows.activities import RuntimeActivities
from workflows.interpreter_workflow import InterpreterWorkflow

WORKFLOWS: Sequence[type] = (InterpreterWorkflow,)


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
            code="TEMPORAL_UNAVAILABLE",
        ) from exc


def build_worker(
    client: Client, settings: Settings, activities: RuntimeActivities | None = None
) -> Worker:
    acts = activities or RuntimeActivities(settings)
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=list(WORKFLOWS),
        activities=[acts.emit_runtime_events, acts.run_action, acts.load_definition],
        max_concurrent_activities=50,
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then drain in-flight tasks and return."""
    client = await connect(settings)
    activities = RuntimeActivities(settings)
    worker = build_worker(client, settings, activities)
    async with worker:
        await stop.wait()
    activities.close()
