"""Errors inside a run: each has a category from §6 (what `retry_on` and `catch` see),
a stable code and the step path where it happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.runtime import CATCHABLE_CATEGORIES

CATEGORIES: tuple[str, ...] = (*CATCHABLE_CATEGORIES, "Cancellation", "InterpreterCorruption")
NEVER_CAUGHT = frozenset({"Cancellation", "InterpreterCorruption"})


@dataclass
class StepError(Exception):
    category: str
    code: str
    message: str
    step_path: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False

    def __post_init__(self) -> None:
        super().__init__(f"{self.category}/{self.code}: {self.message}")

    @property
    def catchable(self) -> bool:
        return self.category not in NEVER_CAUGHT

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "code": self.code,
            "message": self.message,
            "step_path": self.step_path,
            "details": self.details,
        }


class ReturnFromRun(Exception):
    """`control.return`: unwinds every enclosing step and ends the run."""

    def __init__(self, output: Any) -> None:
        super().__init__("return")
        self.output = output
