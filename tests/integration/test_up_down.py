"""`flowledger up --detach` / `down`: the stack plus processor, worker and projector as
child processes, recorded in services.json and stopped by `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from flowledger.stack import processes
from tests.stack_fixture import CACHE
from tests.waiting import wait_for

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


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
    return text


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
            "api",
        ):
            assert services[name]["state"] == "up", (name, services[name])
        assert str(services["temporal"]["ui"]).startswith("http://127.0.0.1:")
        recorded = json.loads((state / "services.json").read_text())["components"]
        assert set(recorded) == {"processor", "worker", "projector", "reconciler", "api"}
        api = str(services["api"]["endpoint"])
        assert (
            api.startswith("http://127.0.0.1:") and services["api"]["metrics"] == f"{api}/metrics"
        )
        # The development token, printed once: it reads the (empty) inbox of acme.
        token = str(up["api_token"])
        wait_for(lambda: _answers(f"{api}/readyz"), 60, "api /readyz")
        request = urllib.request.Request(
            f"{api}/v1/tasks", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read()) == []
        assert token not in (state / "api-tokens.json").read_text()
        pids = [recorded[name]["pid"] for name in recorded]
        assert all(processes.alive(pid) for pid in pids)
        status = _cli(["stack", "status", "--json", "--state-dir", str(state)], env)["services"]
        assert isinstance(status, dict)
        urls = {name: services[name]["metrics"] for name in recorded}
        assert len(set(urls.values())) == len(urls)
        for name, url in urls.items():
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), url
            assert status[name]["metrics"] == url
            base = url.removesuffix("/metrics")
            wait_for(lambda base=base: _answers(f"{base}/healthz"), 60, f"{name} /healthz")
            wait_for(lambda base=base: _answers(f"{base}/readyz"), 60, f"{name} /readyz")
            body = _body(url)
            assert f"flowledger_{name}_" in body, (name, body[:500])
        assert (
            _cli(["stack", "status", "--json", "--state-dir", str(state)], env)["services"]["api"][
                "endpoint"
            ]
            == api
        )
    finally:
        down = _cli(["down", "--json", "--state-dir", str(state)], env)
    assert not (state / "services.json").exists()
    after = down["services"]
    assert isinstance(after, dict)
    assert {n: s["state"] for n, s in after.items()} == dict.fromkeys(after, "down")
    assert not any(processes.alive(pid) for pid in pids)
