"""The runtime's own components (processor, worker, projector, reconciler, api) as child
processes of `flowledger up`, recorded in <state>/services.json next to stack.json so that `down`
(or `up` again) finds them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flowledger.codes import SERVICE_UNKNOWN
from flowledger.errors import InvalidInput
from flowledger.settings import Settings
from flowledger.stack import processes

COMPONENTS: dict[str, list[str]] = {
    "worker": ["worker"],
    "projector": ["projector"],
    "processor": ["processor"],
    "reconciler": ["reconciler"],
    "api": ["api"],
}
# The API serves its /metrics beside its endpoints, on its own port.
SERVES_HTTP = {"api"}
FILE = "services.json"
# Long enough for the processor to finish its batches in flight and commit.
STOP_GRACE_S = 30.0


def _path(settings: Settings) -> Path:
    return settings.stack.state_dir.resolve() / FILE


def _command() -> list[str]:
    script = Path(sys.executable).parent / "flowledger"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from flowledger.cli import main; main()"]


def load(settings: Settings) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = data.get("components") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def _save(settings: Settings, components: dict[str, dict[str, Any]]) -> None:
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"components": components}, indent=2), encoding="utf-8")
    tmp.replace(path)


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def _metrics_port(known: dict[str, Any] | None) -> int:
    """The port a component served its metrics on before, if it is free again (so a
    scrape configuration stays right across restarts), else a new free one."""
    before = (known or {}).get("metrics_port")
    if isinstance(before, int) and processes.port_is_free(before):
        return before
    return processes.free_port()


def _spawn(
    settings: Settings, name: str, env: dict[str, str], known: dict[str, Any] | None = None
) -> dict[str, Any]:
    log = settings.stack.state_dir.resolve() / "logs" / f"{name}.log"
    argv = [*_command(), *COMPONENTS[name]]
    port = _metrics_port(known)
    own = {**env, "FLOWLEDGER_METRICS__HOST": "127.0.0.1", "FLOWLEDGER_METRICS__PORT": str(port)}
    if name in SERVES_HTTP:
        own.update({"FLOWLEDGER_API__HOST": "127.0.0.1", "FLOWLEDGER_API__PORT": str(port)})
    proc = processes.spawn(argv, log, env=own)
    entry: dict[str, Any] = {
        "pid": proc.pid,
        "log": str(log),
        "argv": argv,
        "metrics_port": port,
        "metrics": metrics_url(port),
    }
    if name in SERVES_HTTP:
        entry["endpoint"] = f"http://127.0.0.1:{port}"
    return entry


def start(settings: Settings, env: dict[str, str]) -> list[str]:
    """Start every component that is not already running (a running one is left
    alone, whatever it is doing); the worker first, so the processor's first signals
    and starts find it. Returns the names started."""
    current = load(settings)
    started = []
    for name in COMPONENTS:
        known = current.get(name)
        if known and processes.alive(known.get("pid")):
            continue
        current[name] = _spawn(settings, name, env, known)
        _save(settings, current)
        started.append(name)
    return started


def check_name(name: str) -> None:
    if name not in COMPONENTS:
        raise InvalidInput(
            f"unknown component {name!r}; one of {', '.join(COMPONENTS)}",
            code=SERVICE_UNKNOWN,
            service=name,
        )


def restart(settings: Settings, name: str, env: dict[str, str]) -> None:
    """Stop one component (SIGTERM: it finishes and commits what is in flight) and
    start it again; the others keep running."""
    check_name(name)
    current = load(settings)
    known = current.get(name)
    if known:
        processes.stop(known.get("pid"), grace_s=STOP_GRACE_S)
    current[name] = _spawn(settings, name, env, known)
    _save(settings, current)


def stop(settings: Settings) -> list[str]:
    """SIGTERM (then SIGKILL) in reverse order: the processor stops feeding first."""
    current = load(settings)
    stopped = []
    for name in reversed(list(COMPONENTS)):
        known = current.get(name)
        if known:
            processes.stop(known.get("pid"), grace_s=STOP_GRACE_S)
            stopped.append(name)
    _path(settings).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    current = load(settings)
    out: dict[str, dict[str, Any]] = {}
    for name in COMPONENTS:
        known = current.get(name)
        if not known:
            out[name] = {"state": "down", "pid": None, "log": None, "metrics": None}
            if name in SERVES_HTTP:
                out[name]["endpoint"] = None
            continue
        up = processes.alive(known.get("pid"))
        out[name] = {
            "state": "up" if up else "down",
            "pid": known.get("pid"),
            "log": known.get("log"),
            "metrics": known.get("metrics") if up else None,
        }
        if name in SERVES_HTTP:
            out[name]["endpoint"] = known.get("endpoint") if up else None
    return out
