"""`flowledger up --detach` / `down`: the stack plus processor, worker and projector as
child processes, recorded in services.json and stopped by `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flowledger.stack import processes
from tests.stack_fixture import CACHE

REPO = Path(__file__).resolve().parents[2]


def _cli(args: list[str], env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "flowledger"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(document, dict)
    return document


def test_up_detach_then_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env["FLOWLEDGER_STACK__CACHE_DIR"] = str(CACHE)
    state = tmp_path / "state"
    up = _cli(["up", "--detach", "--json", "--state-dir", str(state)], env)
    services = up["services"]
    assert isinstance(services, dict)
    try:
        for name in (
            "kafka",
            "temporal",
            "database",
            "processor",
            "worker",
            "projector",
            "reconciler",
        ):
            assert services[name]["state"] == "up", (name, services[name])
        assert str(services["temporal"]["ui"]).startswith("http://127.0.0.1:")
        recorded = json.loads((state / "services.json").read_text())["components"]
        assert set(recorded) == {"processor", "worker", "projector", "reconciler"}
        pids = [recorded[name]["pid"] for name in recorded]
        assert all(processes.alive(pid) for pid in pids)
    finally:
        down = _cli(["down", "--json", "--state-dir", str(state)], env)
    assert not (state / "services.json").exists()
    after = down["services"]
    assert isinstance(after, dict)
    assert {n: s["state"] for n, s in after.items()} == dict.fromkeys(after, "down")
    assert not any(processes.alive(pid) for pid in pids)
