"""`flowledger stack up|status|down` as a user runs it: a separate stack in its own
state directory, real processes, real readiness checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowledger.stack import processes
from tests.stack_fixture import CACHE
from tests.waiting import wait_for

FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except (OSError, urllib.error.URLError):
        return None


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "FLOWLEDGER_STACK__CACHE_DIR": str(CACHE), **(env or {})}
    return subprocess.run(
        [FLOWLEDGER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    run("stack", "down", "--state-dir", str(path))


def test_up_status_down(state_dir: Path) -> None:
    up = run("stack", "up", "--state-dir", str(state_dir), "--json")
    assert up.returncode == 0, up.stderr
    started = json.loads(up.stdout)
    assert {s["state"] for s in started["services"].values()} == {"up"}
    assert (state_dir / "stack.json").exists()

    status = run("stack", "status", "--state-dir", str(state_dir), "--json")
    document = json.loads(status.stdout)
    services = document["services"]
    assert services["kafka"]["state"] == "up"
    assert services["kafka"]["endpoint"].startswith("127.0.0.1:")
    assert services["temporal"]["state"] == "up"
    assert services["database"]["endpoint"].startswith("sqlite:///")
    pids = [s["pid"] for s in services.values() if s["pid"]]
    assert pids and all(processes.alive(p) for p in pids)
    ui = services["temporal"]["ui"]
    assert ui.startswith("http://127.0.0.1:")
    assert wait_for(lambda: _http_status(ui) == 200, 30, f"the Temporal UI at {ui}")
    human = run("stack", "status", "--state-dir", str(state_dir))
    assert f"Temporal UI: {ui}" in human.stdout

    again = run("stack", "up", "--state-dir", str(state_dir), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["services"]["kafka"]["pid"] == services["kafka"]["pid"]

    down = run("stack", "down", "--state-dir", str(state_dir), "--json")
    assert down.returncode == 0, down.stderr
    assert not any(processes.alive(p) for p in pids)
    assert json.loads(down.stdout)["services"]["kafka"]["state"] == "down"
    twice = run("stack", "down", "--state-dir", str(state_dir), "--json")
    assert twice.returncode == 0


def test_port_taken_fails_with_one_line_and_leaves_nothing(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            "stack",
            "up",
            "--state-dir",
            str(state_dir),
            "--json",
            env={"FLOWLEDGER_STACK__KAFKA_PORT": str(port)},
        )
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "STACK_PORT_IN_USE"
    assert str(port) in error["message"]
    assert not (state_dir / "stack.json").exists()


def test_without_java_fails_and_leaves_nothing(state_dir: Path) -> None:
    result = run(
        "stack",
        "up",
        "--state-dir",
        str(state_dir),
        "--json",
        env={"FLOWLEDGER_STACK__JAVA_BIN": "no-such-java"},
    )
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "STACK_JAVA_MISSING"
    assert not (state_dir / "stack.json").exists()


def test_without_maven_and_no_cached_jars(state_dir: Path, tmp_path: Path) -> None:
    result = run(
        "stack",
        "up",
        "--state-dir",
        str(state_dir),
        "--json",
        env={
            "FLOWLEDGER_STACK__MVN_BIN": "no-such-mvn",
            "FLOWLEDGER_STACK__CACHE_DIR": str(tmp_path / "empty-cache"),
        },
    )
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "STACK_MAVEN_MISSING"
    assert not (state_dir / "stack.json").exists()
