"""The worker that hosts the interpreter workflow and its activities. (A client
alone comes from `workflows.client`.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from flowledger.settings import Settings
from workflows.activities import RuntimeActivities
from workflows.client import connect
from workflows.interpreter_workflow import InterpreterWorkflow

WORKFLOWS: Sequence[type] = (InterpreterWorkflow,)

# The interpreter runs in Temporal's sandbox, which refuses non-deterministic calls
# (wall clock, randomness, I/O) made from workflow code. Our own modules and the
# libraries they evaluate with are deterministic and passed through, so they are
# imported once per worker rather than once per workflow run.
PASSTHROUGH_MODULES: tuple[str, ...] = (
    "pydantic",
    "pydantic_core",
    "jsonata",
    "jsonschema",
    # The tracing interceptor's workflow side keeps OpenTelemetry's context inside the
    # sandbox; one copy of the module is what makes that context the worker's own.
    "opentelemetry",
    "schemas",
    "workflows",
)
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
)


def build_worker(
    client: Client, settings: Settings, activities: RuntimeActivities | None = None
) -> Worker:
    acts = activities or RuntimeActivities(settings)
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=WORKFLOW_RUNNER,
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
