"""The expression contract (ARCHITECTURE §7): JSONata with an allow-list of helper
functions, `==` as `=`, and deterministic guardrails.

    compiled = compile("payload.amount > 100")
    compiled.evaluate({"payload": {"amount": 150}}, clock)  # -> True
"""

from __future__ import annotations

from workflows.expressions.errors import (
    CODES,
    EXPR_BUDGET_EXCEEDED,
    EXPR_DISALLOWED_FUNCTION,
    EXPR_EVALUATION,
    EXPR_NOT_SERIALIZABLE,
    EXPR_OUTPUT_TOO_LARGE,
    EXPR_SYNTAX,
    ExpressionError,
)
from workflows.expressions.evaluate import (
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_STEP_BUDGET,
    CompiledExpression,
    cache_clear,
    compile,
    compile_with,
    evaluate,
)
from workflows.expressions.functions import HELPERS, format_now

__all__ = [
    "CODES",
    "DEFAULT_MAX_OUTPUT_CHARS",
    "DEFAULT_STEP_BUDGET",
    "EXPR_BUDGET_EXCEEDED",
    "EXPR_DISALLOWED_FUNCTION",
    "EXPR_EVALUATION",
    "EXPR_NOT_SERIALIZABLE",
    "EXPR_OUTPUT_TOO_LARGE",
    "EXPR_SYNTAX",
    "HELPERS",
    "CompiledExpression",
    "ExpressionError",
    "cache_clear",
    "compile",
    "compile_with",
    "evaluate",
    "format_now",
]
