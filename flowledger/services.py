"""The runtime's own components (processor, worker, projector) as child processes of
`flowledger up`, recorded in <state>/services.json next to stack.json so that `down`
(or `up` again) finds them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flowledger.settings import Settings
from flowledger.stack import processes

COMPONENTS: dict[str, list[str]] = {
    "worker": ["worker"],
    "projector": ["projector"],
    "processor": ["processor"],
}
FILE = "services.json"


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


def start(settings: Settings, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Start every component that is not already running; the worker first, so the
    processor's first signals and starts find it."""
    state_dir = settings.stack.state_dir.resolve()
    current = load(settings)
    for name, args in COMPONENTS.items():
        known = current.get(name)
        if known and processes.alive(known.get("pid")):
            continue
        log = state_dir / "logs" / f"{name}.log"
        argv = [*_command(), *args]
        proc = processes.spawn(argv, log, env=env)
        current[name] = {"pid": proc.pid, "log": str(log), "argv": argv}
        _save(settings, current)
    return current


def stop(settings: Settings) -> list[str]:
    """SIGTERM (then SIGKILL) in reverse order: the processor stops feeding first."""
    current = load(settings)
    stopped = []
    for name in reversed(list(COMPONENTS)):
        known = current.get(name)
        if known:
            processes.stop(known.get("pid"), grace_s=30.0)
            stopped.append(name)
    _path(settings).unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    current = load(settings)
    out: dict[str, dict[str, Any]] = {}
    for name in COMPONENTS:
        known = current.get(name)
        if not known:
            out[name] = {"state": "down", "pid": None, "log": None}
            continue
        up = processes.alive(known.get("pid"))
        out[name] = {
            "state": "up" if up else "down",
            "pid": known.get("pid"),
            "log": known.get("log"),
        }
    return out
