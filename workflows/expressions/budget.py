"""The deterministic step meter: the only bound on evaluation (there is no wall-clock
limit, so a replay on a slower machine takes exactly the same path)."""

from __future__ import annotations

from typing import NoReturn

from workflows.expressions.errors import EXPR_BUDGET_EXCEEDED, ExpressionError


class StepMeter:
    """Counts evaluation steps and remembers the first refusal.

    jsonata wraps some foreign exceptions (for instance inside `and`/`or`) into its
    own; remembering the failure here lets the caller report the real cause whatever
    jsonata turned it into on the way out.
    """

    __slots__ = ("budget", "expression", "failure", "used")

    def __init__(self, budget: int, expression: str) -> None:
        self.budget = budget
        self.expression = expression
        self.used = 0
        self.failure: ExpressionError | None = None

    def charge(self, steps: int) -> None:
        self.used += steps
        if self.used > self.budget:
            self.fail(
                ExpressionError(
                    EXPR_BUDGET_EXCEEDED,
                    f"evaluation needs more than the step budget of {self.budget} steps",
                    expression=self.expression,
                    step_budget=self.budget,
                )
            )

    def fail(self, error: ExpressionError) -> NoReturn:
        if self.failure is None:
            self.failure = error
        raise self.failure
