"""Runtime throughput on the local stack, printed as one JSON document:

- steps/s of one long run of `assign` steps, and the runtime events/s it emits, with
  the CPU this process (worker and client) spent on it per step;
- complete simple runs/s (start -> core.noop action -> return), against the baseline
  a user would write by hand: a temporalio workflow calling the same `run_action`
  activity once (benchmarks/_handwritten.py), started the same way on the same worker,
  in rounds of alternating order (`simple_run_ratio`); an empty workflow's rate is
  printed beside them for context.

The interpreter runs in Temporal's sandbox as in `flowledger worker`; `--no-sandbox`
measures it without, for the cost of the sandbox (docs/decisions.md).

    .venv/bin/python benchmarks/runtime.py [--steps 2000] [--runs 100] [--rounds 2] [--no-sandbox]
        [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner

# Run as a script (`python benchmarks/runtime.py`), Python puts benchmarks/ itself
# on the path, not the repository root that holds the `benchmarks` package; the
# project's own packages come from the editable install either way.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._handwritten import HandWrittenWorkflow
from benchmarks._stack import local_stack
from flowledger.cli.foreground import tune_gc
from flowledger.settings import Settings
from schemas.definition_record import DefinitionRecord
from workflows import control
from workflows.activities import RuntimeActivities
from workflows.client import connect
from workflows.definitions.canonical import definition_hash
from workflows.interpreter_workflow import InterpreterWorkflow
from workflows.worker import WORKFLOW_RUNNER


@workflow.defn(name="bench.empty", sandboxed=False)
class EmptyWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None


def record(steps: list[dict[str, object]]) -> DefinitionRecord:
    doc = {
        "id": f"bench-{uuid.uuid4().hex[:6]}",
        "version": 1,
        "tenant": "bench",
        "name": "bench",
        "steps": steps,
    }
    return DefinitionRecord(
        tenant="bench",
        definition_id=doc["id"],
        version=1,
        hash=definition_hash(doc),
        published_at=datetime.now(UTC),
        definition=doc,
    )


async def measure(
    settings: Settings, steps: int, runs: int, sandboxed: bool = True, rounds: int = 2
) -> dict[str, object]:
    # The collector settings of `flowledger worker`.
    tune_gc()
    client = await connect(settings)
    runner: WorkflowRunner = WORKFLOW_RUNNER if sandboxed else UnsandboxedWorkflowRunner()
    activities = RuntimeActivities(settings)
    worker = Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[InterpreterWorkflow, EmptyWorkflow, HandWrittenWorkflow],
        workflow_runner=runner,
        activities=[activities.emit_runtime_events, activities.run_action],
        max_concurrent_activities=50,
    )
    queue = settings.temporal.task_queue
    async with worker:
        long_def = record(
            [
                {
                    "id": f"s{i}",
                    "type": "assign",
                    "assign": {"vars.n": {"$expr": "coalesce(vars.n, 0) + 1"}},
                }
                for i in range(steps)
            ]
        )
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        started = await control.start(settings, client, long_def, {})
        result = await client.get_workflow_handle(started.workflow_id).result()
        long_s = time.perf_counter() - t0
        long_cpu_s = time.process_time() - cpu0
        events = int(result["last_seq"])

        simple = record(
            [
                {
                    "id": "act",
                    "type": "action.call",
                    "action": "core.noop",
                    "version": 1,
                    "input": {"value": {"$expr": "payload.n"}},
                    "save_as": "vars.out",
                },
                {"id": "ret", "type": "control.return", "output": {"$expr": "vars.out.value"}},
            ]
        )

        async def simple_runs(count: int) -> float:
            t0 = time.perf_counter()
            handles = [
                await control.start(settings, client, simple, {"n": i}) for i in range(count)
            ]
            outputs = await asyncio.gather(
                *(client.get_workflow_handle(h.workflow_id).result() for h in handles)
            )
            assert [o["output"] for o in outputs] == list(range(count))
            return count / (time.perf_counter() - t0)

        async def handwritten_runs(count: int) -> float:
            t0 = time.perf_counter()
            handles = [
                await client.start_workflow(
                    HandWrittenWorkflow.run, i, id=f"bench-hand-{uuid.uuid4()}", task_queue=queue
                )
                for i in range(count)
            ]
            outputs = await asyncio.gather(*(h.result() for h in handles))
            assert list(outputs) == list(range(count))
            return count / (time.perf_counter() - t0)

        async def empty_runs(count: int) -> float:
            t0 = time.perf_counter()
            empties = [
                await client.start_workflow(
                    EmptyWorkflow.run, id=f"bench-empty-{uuid.uuid4()}", task_queue=queue
                )
                for _ in range(count)
            ]
            await asyncio.gather(*(h.result() for h in empties))
            return count / (time.perf_counter() - t0)

        per_round = max(1, runs // rounds)
        simple_rates: list[float] = []
        hand_rates: list[float] = []
        for round_ in range(rounds):
            if round_ % 2 == 0:
                simple_rates.append(await simple_runs(per_round))
                hand_rates.append(await handwritten_runs(per_round))
            else:
                hand_rates.append(await handwritten_runs(per_round))
                simple_rates.append(await simple_runs(per_round))
        empty_rate = await empty_runs(per_round)
    activities.close()
    simple_rate = statistics.mean(simple_rates)
    hand_rate = statistics.mean(hand_rates)
    return {
        "sandboxed": sandboxed,
        "long_run_steps": steps,
        "steps_per_s": round(steps / long_s, 1),
        # This process's CPU (workflow, activities, the SDK's core) per step: what the
        # worker's share is, whatever else loads the machine.
        "long_run_cpu_ms_per_step": round(long_cpu_s * 1000 / steps, 3),
        "runtime_events": events,
        "runtime_events_per_s": round(events / long_s, 1),
        "simple_runs": per_round * rounds,
        "simple_runs_per_s": round(simple_rate, 2),
        "handwritten_runs_per_s": round(hand_rate, 2),
        "simple_run_ratio": round(simple_rate / hand_rate, 3),
        "simple_rounds": [round(r, 2) for r in simple_rates],
        "handwritten_rounds": [round(r, 2) for r in hand_rates],
        "empty_workflow_runs_per_s": round(empty_rate, 2),
        "simple_vs_empty_ratio": round(simple_rate / empty_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="alternating simple-run rounds")
    parser.add_argument("--no-sandbox", action="store_true", help="run the workflows unsandboxed")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    with local_stack() as settings:
        figures = asyncio.run(
            measure(settings, args.steps, args.runs, not args.no_sandbox, args.rounds)
        )
    if not args.json:
        for name, value in figures.items():
            print(f"{name:>28}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
