"""The baseline of the simple-run benchmark: what a user would write by hand instead
of a definition, a temporalio workflow that calls the same `run_action` activity once
(core.noop, the same input) and returns its value. Its own small module, so that
Temporal's sandbox (the default a user gets) loads only this and temporalio."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.messages import ActionRequest


@workflow.defn(name="bench.handwritten")
class HandWrittenWorkflow:
    @workflow.run
    async def run(self, n: int) -> Any:
        info = workflow.info()
        result = await workflow.execute_activity(
            "run_action",
            ActionRequest(
                run_id=info.workflow_id,
                tenant="bench",
                step_path="root.steps[0]",
                iteration="",
                action="core.noop",
                version=1,
                input={"value": n},
                idempotency_key=f"{info.workflow_id}:act",
            ),
            start_to_close_timeout=timedelta(seconds=60),
        )
        return result["output"]["value"]
