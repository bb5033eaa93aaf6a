"""The expression contract's refusals: one error class, stable codes (§7)."""

from __future__ import annotations

from typing import Any, Final

from flowledger.errors import FlowledgerError

#: The expression does not parse; the message says where.
EXPR_SYNTAX: Final = "EXPR_SYNTAX"
#: A function call, lambda or dynamic call outside the allowed list.
EXPR_DISALLOWED_FUNCTION: Final = "EXPR_DISALLOWED_FUNCTION"
#: The result is not JSON-serializable.
EXPR_NOT_SERIALIZABLE: Final = "EXPR_NOT_SERIALIZABLE"
#: The result's compact JSON is longer than expressions.max_output_chars.
EXPR_OUTPUT_TOO_LARGE: Final = "EXPR_OUTPUT_TOO_LARGE"
#: Evaluation ran past its deterministic step budget.
EXPR_BUDGET_EXCEEDED: Final = "EXPR_BUDGET_EXCEEDED"
# Not named by the contract: a well-formed, permitted expression that fails while it
# runs (adding a string to a number, calling a helper with the wrong arity...).
#: A permitted expression failed while it ran (a string added to a number, say).
EXPR_EVALUATION: Final = "EXPR_EVALUATION"

CODES: Final = frozenset(
    {
        EXPR_SYNTAX,
        EXPR_DISALLOWED_FUNCTION,
        EXPR_NOT_SERIALIZABLE,
        EXPR_OUTPUT_TOO_LARGE,
        EXPR_BUDGET_EXCEEDED,
        EXPR_EVALUATION,
    }
)


class ExpressionError(FlowledgerError):
    """An expression that was refused at validation or failed while evaluating.

    Never retryable: the same text, input and clock always fail the same way, which
    is what lets a workflow replay reach the same error.
    """

    code = EXPR_EVALUATION
    category = "ExpressionError"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        expression: str | None = None,
        position: int | None = None,
        **context: Any,
    ) -> None:
        super().__init__(
            message,
            code=code,
            retryable=False,
            expression=expression,
            position=position,
            **context,
        )

    @property
    def expression(self) -> str | None:
        value = self.context.get("expression")
        return value if isinstance(value, str) else None

    @property
    def position(self) -> int | None:
        value = self.context.get("position")
        return value if isinstance(value, int) else None
