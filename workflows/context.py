"""The run's data (payload, vars, loop locals) and the two things done to it:
building the expression context and assigning to dotted targets."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from workflows.codes import ASSIGN_TARGET_INVALID
from workflows.errors import StepError

FORBIDDEN_SEGMENTS = frozenset({"__proto__", "constructor", "prototype"})
ROOTS = ("vars", "payload", "local")


@dataclass
class RunData:
    payload: dict[str, Any]
    vars: dict[str, Any] = field(default_factory=dict)

    def context(
        self, system: dict[str, Any], local: dict[str, Any], additions: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out = {"payload": self.payload, "vars": self.vars, "local": local, "system": system}
        if additions:
            out.update(additions)
        return out

    def assign(self, target: str, value: Any, local: dict[str, Any], step_path: str) -> None:
        segments = target.split(".")
        if (
            len(segments) < 2
            or segments[0] not in ROOTS
            or any(not s or s in FORBIDDEN_SEGMENTS for s in segments)
        ):
            raise StepError(
                "ValidationError",
                ASSIGN_TARGET_INVALID,
                f"cannot assign to {target!r}",
                step_path,
                {"target": target},
            )
        root: dict[str, Any] = {"vars": self.vars, "payload": self.payload, "local": local}[
            segments[0]
        ]
        node = root
        for segment in segments[1:-1]:
            child = node.get(segment)
            if not isinstance(child, dict):
                child = {}
                node[segment] = child
            node = child
        node[segments[-1]] = copy.deepcopy(value)
