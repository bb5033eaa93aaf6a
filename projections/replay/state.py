"""What `replay verify` last found, kept beside the stack's state, so `replay swap`
can refuse a rebuild that was not verified clean at the cut it covers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowledger.settings import Settings


def _file(settings: Settings) -> Path:
    return settings.stack.state_dir.resolve() / "replay" / "last-verify.json"


def save(settings: Settings, record: dict[str, Any]) -> None:
    path = _file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")


def load(settings: Settings) -> dict[str, Any] | None:
    path = _file(settings)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None
