"""What one processor instance has done, for `--json`, status and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    records: int = 0
    refused: int = 0
    duplicates: int = 0
    signals: int = 0
    starts: int = 0
    held: int = 0
    released: int = 0
    expired: int = 0
    commits: int = 0
    caught_up: bool = False
    # Start-up (Temporal connect, index rebuild) within `seconds`.
    ready_seconds: float = 0.0
    # When the first ingress record arrived (after start-up and the group join), so a
    # backlog's processing rate is records / (seconds - first_record_seconds).
    first_record_seconds: float = 0.0
    # When --until-idle found every owned partition handled (shutdown not included).
    caught_up_seconds: float = 0.0
    seconds: float = 0.0
    # What the start read to be ready: the snapshot's size and contents, the records
    # after it, the open waits then known.
    startup: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}
