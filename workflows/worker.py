"""The worker that hosts the interpreter workflow and its activities. (A client
alone comes from `workflows.client`.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from flowledger.metrics import HealthServer
from flowledger.settings import Settings
from workflows.activities import RuntimeActivities
from workflows.client import connect
from workflows.interpreter_workflow import InterpreterWorkflow
from workflows.metrics import SdkMetrics, WorkerMetrics

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


class WorkerService:
    """The worker as `flowledger worker` runs it: with /metrics (its own families and
    the SDK's), /healthz and /readyz (ready while it polls its task queue)."""

    def __init__(self, settings: Settings, announce: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.announce = announce
        self.metrics = WorkerMetrics()
        wanted = settings.metrics.enabled and settings.metrics.temporal_sdk
        self.sdk = SdkMetrics() if wanted else None
        self._worker: Worker | None = None
        self._server: HealthServer | None = None

    @property
    def metrics_url(self) -> str | None:
        return self._server.url if self._server is not None else None

    def readiness(self) -> dict[str, bool]:
        return {"polling": self._worker is not None and self._worker.is_running}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain in-flight tasks and return."""
        if self.settings.metrics.enabled:
            server = HealthServer(
                "worker",
                self.metrics.registry,
                self.readiness,
                host=self.settings.metrics.host,
                port=self.settings.metrics.port,
                extra=self.sdk.scrape if self.sdk is not None else None,
            )
            url = server.start()
            self._server = server
            if self.announce is not None:
                self.announce(url)
        activities = RuntimeActivities(self.settings, metrics=self.metrics)
        try:
            client = await connect(self.settings, self.sdk.runtime if self.sdk else None)
            self._worker = build_worker(client, self.settings, activities)
            async with self._worker:
                await stop.wait()
        finally:
            activities.close()
            if self._server is not None:
                self._server.close()


async def run_worker(
    settings: Settings, stop: asyncio.Event, announce: Callable[[str], None] | None = None
) -> None:
    """Run until `stop` is set, then drain in-flight tasks and return; `announce` is
    told the metrics URL once it is served."""
    await WorkerService(settings, announce).run(stop)
