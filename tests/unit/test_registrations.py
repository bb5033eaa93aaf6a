"""Registration completeness: every step type has its model, child lists, publish
rule and handler in one row; every runtime event type has a fold; the action
registry is complete on import; workflows/ has no import cycle, counting imports
inside functions; a Temporal client comes without worker code."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from projections.changes import Coordinates
from projections.fold_runtime import RunRow, RunState, fold_runtime
from projections.synthetic import runtime_event
from schemas.runtime import RUNTIME_EVENT_TYPES
from tests.unit.test_interpreter import MemoryHost, run_input
from workflows import step_types
from workflows.definitions.model import STEP_MODELS
from workflows.definitions.validate import validate
from workflows.interpreter import Interpreter

REPO = Path(__file__).resolve().parents[2]


def test_every_step_model_is_registered_once_with_rule_and_handler() -> None:
    registered = [t.model for t in step_types.STEP_TYPES.values()]
    assert sorted(m.__name__ for m in registered) == sorted(m.__name__ for m in STEP_MODELS)
    for name, entry in step_types.STEP_TYPES.items():
        assert entry.name == name
        assert callable(entry.rule) and callable(entry.handler), name
        for child in entry.children:
            assert child in {f.alias or n for n, f in entry.model.model_fields.items()}, child
    assert step_types.HANDLERS.keys() == step_types.STEP_TYPES.keys()


def test_a_step_type_without_a_registration_does_not_pass_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(step_types.STEP_TYPES, "time.wait")
    document = {
        "id": "d",
        "version": 1,
        "tenant": "acme",
        "name": "d",
        "description": "",
        "steps": [{"id": "t", "type": "time.wait", "duration_ms": 5}],
    }
    assert [(p.path, p.code) for p in validate(document)] == [
        ("root.steps[0].type", "DEFINITION_UNKNOWN_STEP_TYPE")
    ]


# One minimal event of each type; a new event type fails here until it has one.
SAMPLES: dict[str, dict[str, Any]] = {
    "RunStarted": {"definition_id": "d", "version": 1, "definition_hash": "h"},
    "StepStarted": {"step_path": "root.steps[0]", "step_type": "assign"},
    "StepCompleted": {"step_path": "root.steps[0]", "step_type": "assign", "status": "SUCCEEDED"},
    "WaitCreated": {"wait_id": "w", "wait_type": "time", "step_path": "root.steps[0]"},
    "WaitResolved": {"wait_id": "w", "resolution": "RESOLVED"},
    "ActionInvocation": {
        "invocation_id": "i",
        "step_path": "root.steps[0]",
        "action": "core.noop",
        "version": 1,
        "status": "SUCCEEDED",
    },
    "HumanTaskCreated": {
        "task_id": "t",
        "step_path": "root.steps[0]",
        "task_type": "review",
        "title": "t",
    },
    "HumanTaskCompleted": {"task_id": "t", "completed_by": "dana"},
    "RunLog": {"message": "m"},
    "RunCompleted": {"status": "SUCCEEDED"},
    "RunContinuedAsNew": {"next_seq": 3},
    "RunReconciled": {
        "status": "TERMINATED",
        "closed_at": "2026-01-01T00:00:00Z",
        "execution_id": "e1",
    },
    "RunReset": {"execution_id": "e2", "reset_from_execution_id": "e1", "through_seq": 0},
}
BOOKKEEPING = {"last_seq", "updated_at", "source_offset", "source_event_id", "status"}


@pytest.mark.parametrize("event_type", RUNTIME_EVENT_TYPES)
def test_every_runtime_event_type_has_a_fold(event_type: str) -> None:
    assert set(SAMPLES) == set(RUNTIME_EVENT_TYPES)
    before = RunState(RunRow(run_id="r", tenant="acme", last_seq=1))
    event = runtime_event("r", 2, event_type, SAMPLES[event_type])
    folded = fold_runtime(event, Coordinates("flowledger.runtime.v1", 0, 9), before)
    assert folded.applied and folded.state is not None
    # Past the run row every event writes (the last element), the fold must either
    # write rows of its own or change the run beyond seq and provenance.
    moved = {
        k
        for k, v in vars(folded.state.row).items()
        if v != getattr(before.row, k) and k not in BOOKKEEPING
    }
    assert folded.changes[:-1] or moved, f"{event_type} falls through the fold"


def test_action_registry_is_complete_on_import() -> None:
    # A fresh interpreter, so no earlier lookup or import can have filled it in.
    probe = "import workflows.actions as a; print(sorted(n for n, _ in a.REGISTRY))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(
        sorted(["core.emit_event", "core.http_request", "core.log", "core.noop"])
    )


def test_a_temporal_client_comes_without_worker_code() -> None:
    probe = (
        "import sys, workflows.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('workflows.', 'confluent_kafka'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    # Its error codes are plain constants and its TLS diagnosis (used when a
    # connection fails) is no worker code either; nothing else of workflows is loaded.
    assert out.stdout.strip() == (
        "['workflows.client', 'workflows.codes', 'workflows.tls_diagnosis']"
    )


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module of `known` that `path` imports, at module level or inside
    functions. Importing a module runs its packages' __init__ first, so those count."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    return with_parents & known


PACKAGES = ("schemas", "topics", "processors", "workflows", "projections", "flowledger")


def test_no_import_cycle_anywhere() -> None:
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if "versions" not in p.parts
    }
    # A module's own packages are initialised before it runs: not edges of its own.
    graph = {
        m: {i for i in _imports(p, set(modules)) if not m.startswith(i + ".")} - {m}
        for m, p in modules.items()
    }
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            cycle = [*stack[stack.index(module) :], module]
            raise AssertionError(" -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*stack, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


class SleepLog(MemoryHost):
    def __init__(self, fail_actions: int) -> None:
        super().__init__(fail_actions)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def _retrying_action(retry: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": "call",
            "type": "action.call",
            "action": "core.noop",
            "version": 1,
            "input": {"value": 1},
            "retry": retry,
        }
    ]


async def test_an_authored_max_delay_of_zero_is_honoured() -> None:
    host = SleepLog(fail_actions=2)
    steps = _retrying_action({"max_attempts": 3, "backoff_ms": 500, "max_delay_ms": 0})
    result = await Interpreter(run_input(steps), host).execute()
    assert result.status == "SUCCEEDED"
    assert host.sleeps == [0.0, 0.0]
    assert host.clock == datetime(2026, 1, 1, tzinfo=UTC)


async def test_the_delay_cap_defaults_to_a_minute() -> None:
    host = SleepLog(fail_actions=1)
    steps = _retrying_action({"max_attempts": 2, "backoff_ms": 600_000})
    await Interpreter(run_input(steps), host).execute()
    assert host.sleeps == [60.0]
    assert host.clock == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=1)
