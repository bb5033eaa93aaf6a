"""One API deployment per test module: the worker, processor, projector and `flowledger
api` as real processes on the module's own topics, task queue and database, with
tokens for two tenants, and a small HTTP client for them."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowledger.api import tokens
from flowledger.settings import Settings
from flowledger.stack import processes
from tests.integration.runtime_support import REPO, component_env, stop_process
from tests.stack_fixture import StackHandle, isolated
from tests.waiting import wait_for
from topics import admin


@dataclass
class ApiDeployment:
    settings: Settings
    url: str
    tenant_a: str
    tenant_b: str
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        json: Any = None,
        content: str | bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        with httpx.Client(base_url=self.url, timeout=60) as client:
            return client.request(
                method, path, json=json, content=content, params=params, headers=sent
            )

    def run(self, run_id: str, token: str = "op_a") -> dict[str, Any]:
        answer = self.call("GET", f"/v1/runs/{run_id}", token)
        return dict(answer.json()) if answer.status_code == 200 else {}

    def run_status(self, run_id: str, wanted: str, timeout: float = 90) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            doc = self.run(run_id)
            return doc if doc and doc["run"]["status"] == wanted else None

        found: dict[str, Any] = wait_for(
            reached, timeout, f"run {run_id} {wanted}", lambda: str(self.run(run_id))
        )
        return found

    def publish_definition(self, document: dict[str, Any], token: str = "op_a") -> None:
        answer = self.call("POST", "/v1/definitions", token, json=document)
        assert answer.status_code in (200, 201), answer.text

    def start(self, definition_id: str, data: dict[str, Any], token: str = "op_a") -> str:
        tenant = self.tenant_a if token.endswith("_a") else self.tenant_b
        body = {"definition_id": definition_id, "tenant": tenant, "input": data}
        answer = self.call("POST", "/v1/runs", token, json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["run_id"])


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "flowledger"), *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def deploy(stack: StackHandle, root: Path) -> Iterator[ApiDeployment]:
    settings = isolated(stack, root)
    admin.ensure(settings)
    tag = uuid.uuid4().hex[:8]
    tokens_file = root / "api-tokens.json"
    port = processes.free_port()
    deployment = ApiDeployment(
        settings=settings,
        url=f"http://127.0.0.1:{port}",
        tenant_a=f"ta-{tag}",
        tenant_b=f"tb-{tag}",
        root=root,
    )
    a, b = deployment.tenant_a, deployment.tenant_b
    for name, role, tenant in (
        ("op_a", "operator", a),
        ("op_b", "operator", b),
        ("pub_a", "publisher", a),
        ("read_a", "reader", a),
    ):
        made = tokens.create(tokens_file, tenants=[tenant], role=role, name=f"{name}-{tag}")
        deployment.tokens[name] = str(made["token"])
    env = component_env(settings)
    env["FLOWLEDGER_API__TOKENS_FILE"] = str(tokens_file)
    env["FLOWLEDGER_METRICS__PORT"] = "0"
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    for name in ("worker", "projector", "processor"):
        deployment.procs.append(_spawn([name], env, logs / f"{name}.log"))
    api_env = {**env, "FLOWLEDGER_API__HOST": "127.0.0.1", "FLOWLEDGER_API__PORT": str(port)}
    api = _spawn(["api"], api_env, logs / "api.log")
    deployment.procs.append(api)
    try:

        def answering() -> bool:
            if api.poll() is not None:
                pytest.fail(f"flowledger api exited: {(logs / 'api.log').read_text()[-3000:]}")
            return _ready(deployment.url)

        wait_for(answering, 90, "flowledger api /readyz")
        yield deployment
    finally:
        for proc in reversed(deployment.procs):
            stop_process(proc)
