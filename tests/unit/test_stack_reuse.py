"""Which recorded services `up` keeps, starts again on their ports, or refuses to
replace: the decision alone, on hand-made stack.json records (no process started)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flowledger.errors import InvalidInput, ServiceUnavailable, StackError
from flowledger.settings import Settings
from flowledger.stack import launcher
from flowledger.stack.state import ServiceState, StackState


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _stack(kafka_pid: int, temporal_pid: int, db: ServiceState | None = None) -> StackState:
    return StackState(
        state_dir="/x",
        services={
            "kafka": ServiceState(name="kafka", endpoint="127.0.0.1:9101", pid=kafka_pid),
            "temporal": ServiceState(name="temporal", endpoint="127.0.0.1:9102", pid=temporal_pid),
            "database": db
            or ServiceState(
                name="database", endpoint="sqlite:////x/flowledger.db", details={"kind": "sqlite"}
            ),
        },
    )


def test_running_services_are_kept_and_dead_ones_restarted_in_place() -> None:
    current = _stack(os.getpid(), _dead_pid())
    # What `up` asks for when later commands see the stack's own database URL.
    ask = launcher.Ask(None, None, "sqlite:////x/flowledger.db")
    kept, dead = launcher.sort_out(current, ask, Path("/x"))
    assert set(kept) == {"kafka", "database"}
    assert set(dead) == {"temporal"}
    assert dead["temporal"].port() == 9102


def test_a_running_service_is_never_replaced_by_another_configuration() -> None:
    current = _stack(os.getpid(), os.getpid())
    with pytest.raises(StackError) as refused:
        launcher.sort_out(current, launcher.Ask("b1:9092", None, "sqlite"), Path("/x"))
    assert refused.value.code == "STACK_RUNNING_OTHERWISE"
    assert refused.value.context["service"] == "kafka"


def test_a_dead_service_of_another_configuration_is_simply_replaced() -> None:
    current = _stack(_dead_pid(), os.getpid())
    kept, dead = launcher.sort_out(current, launcher.Ask("b1:9092", None, "sqlite"), Path("/x"))
    assert set(kept) == {"temporal", "database"} and not dead


def test_an_attached_service_stays_attached_without_flags() -> None:
    current = _stack(os.getpid(), os.getpid())
    current.services["kafka"] = ServiceState(name="kafka", endpoint="b1:9092", mode="attached")
    kept, _dead = launcher.sort_out(current, launcher.Ask(None, None, "sqlite"), Path("/x"))
    assert kept["kafka"].mode == "attached"


def test_started_names_only_new_processes() -> None:
    before = _stack(10, 11)
    after = before.model_copy(deep=True)
    after.services["kafka"].pid = 12
    assert launcher.started(before, after) == ["kafka"]
    assert launcher.started(None, after) == ["kafka", "temporal", "database"]


def test_restart_refuses_unknown_names_before_anything_else(tmp_path: Path) -> None:
    settings = Settings(stack={"state_dir": tmp_path})
    with pytest.raises(InvalidInput) as unknown:
        launcher.restart(settings, "zookeeper")
    assert unknown.value.code == "STACK_SERVICE_UNKNOWN"
    with pytest.raises(ServiceUnavailable) as missing:
        launcher.restart(settings, "kafka")
    assert missing.value.code == "STACK_NOT_RUNNING" and missing.value.retryable
