"""Compiling and evaluating expressions under the contract's guardrails.

Evaluation drives jsonata's own evaluator through a subclass that meters every
step; it never calls `Jsonata.evaluate`, which reads the wall clock for `$now`.
Nothing here starts threads, reads the time or the environment, or draws random
numbers, so the same source, context and clock always give the same outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

from jsonata import Functions, JException, Jsonata, Utils
from jsonata.parser import Parser
from jsonata.regex_engine import default_regex_engine

from flowledger.settings import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_STEP_BUDGET
from workflows.expressions.budget import StepMeter
from workflows.expressions.errors import (
    EXPR_BUDGET_EXCEEDED,
    EXPR_EVALUATION,
    EXPR_NOT_SERIALIZABLE,
    EXPR_OUTPUT_TOO_LARGE,
    EXPR_SYNTAX,
    ExpressionError,
)
from workflows.expressions.functions import (
    HELPERS,
    NotSerializable,
    compact_json,
    helper_functions,
    helpers_named_in,
    plain,
)
from workflows.expressions.syntax import Rewritten, parse
from workflows.expressions.validate import check_extra_functions, validate

if TYPE_CHECKING:
    from flowledger.settings import ExpressionSettings, Settings

_CACHE_SIZE: Final = 1024
# jsonata refuses ranges above ten million elements on its own (D2014).
_JSONATA_RANGE_LIMIT: Final = "D2014"
# `false` is the longest JSON text of null, true and false.
_SHORTEST_JSON_LIMIT: Final = 5


class _MeteredJsonata(Jsonata):
    """jsonata's evaluator with a step meter on every node it evaluates."""

    def __init__(self, ast: Parser.Symbol, meter: StepMeter) -> None:
        # Deliberately not Jsonata.__init__: that parses again and reads the clock.
        self.parser = Jsonata.get_parser()
        self.ast = ast
        self.errors = None
        self.regex_engine = default_regex_engine
        self.timeout = None
        self.stack = None
        self.timestamp = 0
        self.input = None
        self.environment = Jsonata.Frame(Jsonata.static_frame)
        self.validate_input = True
        self.output_convert_nulls = True
        self.meter = meter

    def get_per_thread_instance(self) -> _MeteredJsonata:
        # jsonata would otherwise run on whichever instance this thread built last.
        return self

    def eval(self, expr: Any, input: Any, environment: Any) -> Any:
        # jsonata's own `eval` plus one step on the meter: every node goes through
        # here, so the charge is inlined and the per-thread lookup (always this
        # instance) left out; the context is saved and restored as jsonata does.
        meter = self.meter
        meter.used += 1
        if meter.used > meter.budget:
            meter.charge(0)
        saved_input, saved_environment = self.input, self.environment
        try:
            return self._eval(expr, input, environment)
        finally:
            self.input, self.environment = saved_input, saved_environment

    def evaluate_range_expression(self, lhs: Any, rhs: Any) -> Any:
        if (
            isinstance(lhs, int)
            and isinstance(rhs, int)
            and not isinstance(lhs, bool)
            and not isinstance(rhs, bool)
            and rhs >= lhs
        ):
            # Charged before the range exists, so a runaway range is never built.
            self.meter.charge(rhs - lhs + 1)
        return super().evaluate_range_expression(lhs, rhs)

    def evaluate_string_concat(self, lhs: Any, rhs: Any) -> Any:
        result = super().evaluate_string_concat(lhs, rhs)
        self.meter.charge(len(result) // 1024)
        return result

    def evaluate_wildcard(self, expr: Any, input: Any) -> Any:
        result = super().evaluate_wildcard(expr, input)
        self.meter.charge(len(result) if isinstance(result, list) else 0)
        return result

    def evaluate_descendants(self, expr: Any, input: Any) -> Any:
        result = super().evaluate_descendants(expr, input)
        self.meter.charge(len(result) if isinstance(result, list) else 0)
        return result


@dataclass(frozen=True, eq=False)
class CompiledExpression:
    """A validated expression, safe to share and to evaluate any number of times."""

    source: str
    functions: frozenset[str]
    step_budget: int
    max_output_chars: int
    _ast: Parser.Symbol = field(repr=False)
    _rewritten: Rewritten = field(repr=False)
    # The helpers the source may refer to; only those are bound for an evaluation.
    _helpers: frozenset[str] = field(repr=False, default=HELPERS)

    def evaluate(self, context: Mapping[str, Any] | Any, clock: datetime) -> Any:
        """The expression's value on `context` at `clock`, as plain JSON data.

        A path that selects nothing is None; raises ExpressionError and nothing else.
        """
        meter = StepMeter(self.step_budget, self.source)
        raw = _run(self, meter, context, clock)
        # The commonest results (a condition's verdict, a missing path) have a JSON
        # form of at most five characters: no need to write it to measure it.
        if (raw is None or raw is True or raw is False) and (
            self.max_output_chars >= _SHORTEST_JSON_LIMIT
        ):
            return raw
        try:
            value = plain(raw)
            text = compact_json(value)
        except NotSerializable as exc:
            raise ExpressionError(
                EXPR_NOT_SERIALIZABLE,
                f"the result is not JSON-serializable: it contains {exc.what}",
                expression=self.source,
            ) from None
        except (RecursionError, ValueError, TypeError) as exc:
            raise ExpressionError(
                EXPR_NOT_SERIALIZABLE,
                f"the result is not JSON-serializable ({type(exc).__name__})",
                expression=self.source,
            ) from None
        if len(text) > self.max_output_chars:
            raise ExpressionError(
                EXPR_OUTPUT_TOO_LARGE,
                f"the result is {len(text)} characters of JSON; the limit is "
                f"{self.max_output_chars}",
                expression=self.source,
                output_chars=len(text),
                max_output_chars=self.max_output_chars,
            )
        return value


def _run(compiled: CompiledExpression, meter: StepMeter, context: Any, clock: datetime) -> Any:
    engine = _MeteredJsonata(compiled._ast, meter)
    env = Jsonata.Frame(Jsonata.static_frame)
    for name, implementation in helper_functions(clock, meter, compiled._helpers).items():
        env.bind(name, Jsonata.JLambda(implementation))
    env.bind("$", context)
    data = context
    if isinstance(data, list) and not Utils.is_sequence(data):
        # Same treatment as Jsonata.evaluate: a top-level array is one value.
        data = Utils.create_sequence(data)
        data.outer_wrapper = True
    holder = Jsonata.CURRENT
    previous = getattr(holder, "jsonata", None)
    # Built-ins allowed through settings (e.g. $map) reach the evaluator this way.
    holder.jsonata = engine
    try:
        if not _json_only(data):
            # jsonata's own check then raises its own refusal of the odd value.
            Functions.validate_input(data)
        result = engine.eval(compiled._ast, data, env)
    except ExpressionError as exc:
        raise (meter.failure or exc) from None
    except JException as exc:
        if meter.failure is not None:
            raise meter.failure from None
        raise _from_jsonata(compiled, exc) from None
    except RecursionError:
        raise ExpressionError(
            EXPR_EVALUATION,
            "the input is nested too deeply to evaluate",
            expression=compiled.source,
        ) from None
    except Exception as exc:
        if meter.failure is not None:
            raise meter.failure from None
        raise ExpressionError(
            EXPR_EVALUATION,
            f"evaluation failed: {type(exc).__name__}: {exc}",
            expression=compiled.source,
        ) from None
    finally:
        if previous is None:
            if hasattr(holder, "jsonata"):
                del holder.jsonata
        else:
            holder.jsonata = previous
    if meter.failure is not None:
        # Something inside jsonata swallowed the refusal; it still stands.
        raise meter.failure
    return result


_JSON_LEAVES: Final = (str, int, float, Jsonata.JFunction, Parser.Symbol)


def _json_only(value: Any) -> bool:
    """What jsonata's `Functions.validate_input` accepts, answered without raising:
    JSON values (dicts walked keys and values, lists items), its functions and
    parsed nodes. One frame per level as there, so that a deeply nested input meets
    the recursion limit as it did; without its import per value, which Temporal's
    sandbox turns into a Python call (the whole run context is walked every time)."""
    if value is None or value is Utils.NULL_VALUE or isinstance(value, _JSON_LEAVES):
        return True
    if isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) or _json_only(key)) or not _json_only(item):
                return False
        return True
    if isinstance(value, list):
        # A loop, not all(...): a generator would add a frame per level.
        for item in value:  # noqa: SIM110
            if not _json_only(item):
                return False
        return True
    return False


def _from_jsonata(compiled: CompiledExpression, exc: JException) -> ExpressionError:
    source = compiled.source
    location = exc.location
    position = (
        compiled._rewritten.original_position(location)
        if isinstance(location, int) and location > 0
        else None
    )
    if exc.error == _JSONATA_RANGE_LIMIT:
        return ExpressionError(
            EXPR_BUDGET_EXCEEDED,
            f"range too large: {exc}",
            expression=source,
            position=position,
        )
    return ExpressionError(
        EXPR_EVALUATION,
        f"evaluation failed: {exc}",
        expression=source,
        position=position,
        jsonata_code=exc.error,
    )


def compile(
    source: str,
    *,
    extra_functions: Iterable[str] = (),
    step_budget: int = DEFAULT_STEP_BUDGET,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> CompiledExpression:
    """Parse and validate `source`; raises ExpressionError (and nothing else).

    Results are cached by source and options: definitions evaluate the same few
    expressions over and over, and a compiled expression is immutable.
    """
    if not isinstance(source, str):
        raise ExpressionError(
            EXPR_SYNTAX, f"an expression must be text, not {type(source).__name__}"
        )
    if isinstance(extra_functions, str):
        extra_functions = (extra_functions,)
    extras = check_extra_functions(tuple(extra_functions))
    if step_budget < 1 or max_output_chars < 1:
        raise ValueError("step_budget and max_output_chars must be positive")
    return _compile_cached(source, extras, step_budget, max_output_chars)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(
    source: str, extras: tuple[str, ...], step_budget: int, max_output_chars: int
) -> CompiledExpression:
    return _compile_uncached(source, extras, step_budget, max_output_chars)


def _compile_uncached(
    source: str, extras: tuple[str, ...], step_budget: int, max_output_chars: int
) -> CompiledExpression:
    allowed = HELPERS | frozenset(extras)
    ast, rewritten = parse(source)
    validate(ast, source=source, allowed=allowed, position_of=rewritten.original_position)
    return CompiledExpression(
        source=source,
        functions=allowed,
        step_budget=step_budget,
        max_output_chars=max_output_chars,
        _ast=ast,
        _rewritten=rewritten,
        _helpers=helpers_named_in(source),
    )


def compile_with(
    source: str, settings: ExpressionSettings | Settings | None = None
) -> CompiledExpression:
    """`compile` with the options of an ExpressionSettings (or a whole Settings)."""
    # Duck-typed so that workflow code need not import the settings model.
    section = cast("ExpressionSettings | None", getattr(settings, "expressions", settings))
    if section is None:
        return compile(source)
    return compile(
        source,
        extra_functions=tuple(section.extra_functions),
        step_budget=section.step_budget,
        max_output_chars=section.max_output_chars,
    )


def evaluate(
    source: str,
    context: Mapping[str, Any] | Any,
    clock: datetime,
    settings: ExpressionSettings | Settings | None = None,
) -> Any:
    """Compile (cached) and evaluate in one call."""
    return compile_with(source, settings).evaluate(context, clock)


def cache_clear() -> None:
    """Forget compiled expressions (benchmarks measure the uncached path with it)."""
    _compile_cached.cache_clear()
