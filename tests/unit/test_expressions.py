"""Expression guardrails, the allow-list walk, and determinism properties."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import flowledger.cli
from flowledger.settings import ExpressionSettings
from workflows.expressions import (
    CODES,
    EXPR_BUDGET_EXCEEDED,
    EXPR_DISALLOWED_FUNCTION,
    EXPR_EVALUATION,
    EXPR_NOT_SERIALIZABLE,
    EXPR_OUTPUT_TOO_LARGE,
    EXPR_SYNTAX,
    CompiledExpression,
    ExpressionError,
    compile,
    evaluate,
    format_now,
)
from workflows.expressions.validate import MAX_NESTING

CLOCK = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)

if not any(group.name == "expr" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def code_of(source: str, context: Any = None, **options: Any) -> str:
    with pytest.raises(ExpressionError) as caught:
        compile(source, **options).evaluate(context or {}, CLOCK)
    return caught.value.code


# -- output size ---------------------------------------------------------------------


def test_output_at_the_limit_passes() -> None:
    big = "x" * 262_142  # plus two quotes: exactly 262,144 characters of JSON
    assert evaluate("payload.big", {"payload": {"big": big}}, CLOCK) == big


def test_output_over_the_limit_is_refused() -> None:
    big = "x" * 300_000
    assert code_of("payload.big", {"payload": {"big": big}}) == EXPR_OUTPUT_TOO_LARGE


def test_output_limit_counts_compact_json_of_structures() -> None:
    items = ["ab"] * 60_000  # ["ab","ab",...] is 5 characters per item
    assert code_of("payload.items", {"payload": {"items": items}}) == EXPR_OUTPUT_TOO_LARGE
    assert evaluate("payload.items", {"payload": {"items": items[:100]}}, CLOCK) == items[:100]


def test_output_limit_from_settings() -> None:
    settings_ = ExpressionSettings(max_output_chars=10)
    with pytest.raises(ExpressionError) as caught:
        evaluate('"abcdefghijk"', {}, CLOCK, settings_)
    assert caught.value.code == EXPR_OUTPUT_TOO_LARGE


# -- step budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "[1..100000000]",
        "[1..200000]",
        "[1..1000].[1..1000]",
        "[1..400].($$.payload.s & $$.payload.s)",
        "len([1..100001])",
    ],
)
def test_runaway_expressions_stop_quickly(source: str) -> None:
    started = time.perf_counter()
    assert code_of(source, {"payload": {"s": "y" * 200_000}}) == EXPR_BUDGET_EXCEEDED
    assert time.perf_counter() - started < 5


def test_range_within_budget_is_fine() -> None:
    assert evaluate("len([1..99000])", {}, CLOCK) == 99_000


def test_budget_is_deterministic_and_configurable() -> None:
    # The same expression passes or fails at the same budget, every time.
    assert compile("[1..10]", step_budget=50).evaluate({}, CLOCK) == list(range(1, 11))
    for _ in range(3):
        assert code_of("[1..10]", step_budget=10) == EXPR_BUDGET_EXCEEDED


def test_budget_refusal_survives_short_circuit_operators() -> None:
    # jsonata rewraps foreign exceptions inside and/or; the refusal must stay a budget one.
    assert code_of("true and len([1..200000]) > 0") == EXPR_BUDGET_EXCEEDED


# -- syntax and the allow-list ------------------------------------------------------------


def test_double_equals_inside_literals_is_kept() -> None:
    context = {"payload": {"s": "a == b", "t": "x==y"}}
    assert evaluate('payload.s == "a == b"', context, CLOCK) is True
    assert evaluate("payload.t = 'x==y'", context, CLOCK) is True
    assert evaluate('"a==b"', {}, CLOCK) == "a==b"
    assert evaluate("`a==b` == 1", {"a==b": 1}, CLOCK) is True
    assert evaluate("/* a == b */ 2 == 2", {}, CLOCK) is True


@pytest.mark.parametrize(
    "source",
    [
        "payload.a and (payload.b)",
        "payload.a or (payload.b)",
        "payload.v in ([1, 2])",
        "payload.a and(payload.b)",
        '"len(1)" = "len(1)"',
        '"sum(x)" & "$string(1)"',
    ],
)
def test_operators_and_literals_are_not_calls(source: str) -> None:
    context = {"payload": {"a": True, "b": True, "v": 1}}
    compile(source).evaluate(context, CLOCK)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("$sum([1])", "sum"),
        ("sum([1])", "sum"),
        ("frobnicate(1)", "frobnicate"),
        ("payload.$string(1)", "string"),
        ("$eval('1')", "eval"),
    ],
)
def test_disallowed_calls_are_named(source: str, name: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile(source)
    assert caught.value.code == EXPR_DISALLOWED_FUNCTION
    assert name in caught.value.message
    assert caught.value.context["function"] == name


@pytest.mark.parametrize(
    "source",
    [
        "function($x){$x}(1)",
        "($f := function($x){$x}; $f(1))",
        "($x := 1; $x(2))",
        "(len)(1)",
        "payload.f(1)(2)",
        "$len(?)",
        "$string",
        "payload ~> $string",
        "payload ~> | a | {} |",
        "payload ~> $v",
    ],
)
def test_lambdas_dynamic_calls_and_function_values_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile(source)
    assert caught.value.code == EXPR_DISALLOWED_FUNCTION


def test_bare_helper_names_are_calls_not_fields() -> None:
    context = {"len": "a field", "payload": {"s": "abc"}}
    assert evaluate("len(payload.s)", context, CLOCK) == 3
    assert evaluate("$len(payload.s)", context, CLOCK) == 3
    assert evaluate("len", context, CLOCK) == "a field"
    assert evaluate("payload.s ~> len()", context, CLOCK) == 3


def test_coalescing_operator_is_not_a_call() -> None:
    assert evaluate("payload.a ?? 'd'", {"payload": {}}, CLOCK) == "d"
    assert code_of("$exists(1)") == EXPR_DISALLOWED_FUNCTION


def test_syntax_errors_say_where() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile("payload.a == (1 + ")
    assert caught.value.code == EXPR_SYNTAX
    # Positions refer to the text as written, before `==` became `=`.
    assert caught.value.position == len("payload.a == (1 + ")


def test_deep_nesting_is_refused_not_crashed() -> None:
    assert code_of("(" * 5000 + "1" + ")" * 5000) == EXPR_SYNTAX
    assert code_of("1" + " + 1" * 3000) == EXPR_SYNTAX


def or_chain(count: int) -> str:
    return " or ".join(f"payload.a = {i}" for i in range(count))


def test_long_or_chains_are_within_the_nesting_limit() -> None:
    assert evaluate(or_chain(199), {"payload": {"a": 198}}, CLOCK) is True
    assert evaluate(or_chain(199), {"payload": {"a": -1}}, CLOCK) is False
    assert evaluate(or_chain(MAX_NESTING - 10), {"payload": {"a": 3}}, CLOCK) is True


def test_the_nesting_limit_is_stated_in_the_refusal() -> None:
    source = "(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1)
    with pytest.raises(ExpressionError) as caught:
        compile(source)
    assert caught.value.code == EXPR_SYNTAX
    assert str(MAX_NESTING) in caught.value.message
    assert caught.value.context["max_nesting"] == MAX_NESTING
    assert evaluate("(" * (MAX_NESTING - 1) + "1" + ")" * (MAX_NESTING - 1), {}, CLOCK) == 1


# -- append: JSONata's $append -----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("append(1, payload.missing)", 1),
        ("append(payload.missing, 1)", 1),
        ("append(payload.missing, payload.missing)", None),
        ("append(null, 1)", [None, 1]),
        ("append([1], null)", [1, None]),
        ("append(null, null)", [None, None]),
        ("append([1, 2], [3])", [1, 2, 3]),
        ("append([], [])", []),
        ("$append('a', 'b')", ["a", "b"]),
        ("append(payload.list, payload.missing)", [1, 2]),
    ],
)
def test_append_behaves_like_jsonata(source: str, value: Any) -> None:
    assert evaluate(source, {"payload": {"list": [1, 2]}}, CLOCK) == value


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("append(payload.none, 1)", [1]),
        ("append(1, payload.none)", [1]),
        ("append(payload.none, null)", [None]),
        ("append(payload.missing, null)", None),
        ("{'a': append(null, payload.none)}", {"a": [None]}),
    ],
)
def test_a_null_read_from_the_data_is_an_empty_list_a_written_one_an_item(
    source: str, value: Any
) -> None:
    # The public contract's "append to null" (a null field) and the issue's
    # `append(null, 1)` (a written null) both hold.
    assert evaluate(source, {"payload": {"none": None}}, CLOCK) == value


def test_append_is_a_function_value_for_allowed_higher_order_builtins() -> None:
    assert compile("$reduce([[1],[2]], $append)", extra_functions=["reduce"]).evaluate(
        {}, CLOCK
    ) == [1, 2]
    folded = compile("$reduce(payload.parts, $append, [0])", extra_functions=["reduce"])
    assert folded.evaluate({"payload": {"parts": [[1], 2, [3, 4]]}}, CLOCK) == [0, 1, 2, 3, 4]
    assert compile("$map([1, 2], $toString)", extra_functions=["map"]).evaluate({}, CLOCK) == [
        "1",
        "2",
    ]
    # Without the higher-order built-in there is nothing to pass it to.
    assert code_of("$reduce([[1],[2]], $append)") == EXPR_DISALLOWED_FUNCTION


# -- variables bound with := -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("($count := 3; $count * 2)", 6),
        ("($string := 'x'; $string & $string)", "xx"),
        ("($count := 3; ($count + 1))", 4),
        ("($count := 3; $sum := $count + 1; [$count, $sum])", [3, 4]),
        ("($len := 2; len('abc') + 0)", None),
    ],
)
def test_a_variable_bound_with_assignment_is_not_a_call(source: str, value: Any) -> None:
    if value is None:
        # A helper's name shadowed by a variable: the bare call now calls a number.
        assert code_of(source) == EXPR_EVALUATION
    else:
        assert evaluate(source, {}, CLOCK) == value


@pytest.mark.parametrize(
    "source",
    [
        # Used before it is bound: the built-in.
        "($x := $count([1]); $count := 3; $x)",
        # Bound in an inner block, whose frame ends with it.
        "(($count := 3); $count([1]))",
        # Bound in a branch that may not run: not known to be the author's.
        "(true ? ($count := 3) : 0; $count)",
        # The value bound is itself checked.
        "($count := $now; 1)",
        # Calling what a variable holds is a dynamic call.
        "($count := 3; $count(1))",
    ],
)
def test_bindings_only_shadow_where_they_certainly_apply(source: str) -> None:
    assert code_of(source) == EXPR_DISALLOWED_FUNCTION


# -- extra functions ---------------------------------------------------------------------


def test_extra_functions_allow_named_builtins() -> None:
    assert code_of("$sum([1, 2])") == EXPR_DISALLOWED_FUNCTION
    assert compile("$sum([1, 2])", extra_functions=["sum"]).evaluate({}, CLOCK) == 3
    assert compile("sum([1, 2])", extra_functions=["$sum"]).evaluate({}, CLOCK) == 3
    settings_ = ExpressionSettings(extra_functions=["uppercase"])
    assert evaluate("$uppercase('a')", {}, CLOCK, settings_) == "A"


@pytest.mark.parametrize("name", ["eval", "now", "millis", "random", "shuffle", "nope"])
def test_unsafe_or_unknown_extra_functions_are_refused(name: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile("1", extra_functions=[name])
    assert caught.value.code == EXPR_DISALLOWED_FUNCTION


def test_extra_functions_from_the_environment_reach_the_cli() -> None:
    runner = CliRunner()
    args = ["expr", "eval", "sum([1, 2])", "--json"]
    refused = runner.invoke(flowledger.cli.app, args, env={})
    assert refused.exit_code == 2
    env = {"FLOWLEDGER_EXPRESSIONS__EXTRA_FUNCTIONS": '["sum"]'}
    allowed = runner.invoke(flowledger.cli.app, args, env=env)
    assert allowed.exit_code == 0, allowed.stdout
    assert json.loads(allowed.stdout) == {"value": 3}


# -- helpers and values -----------------------------------------------------------------


def test_now_iso_formats_any_timezone_as_utc() -> None:
    later = datetime(2026, 1, 2, 5, 4, 5, 678_999, tzinfo=timezone(timedelta(hours=2)))
    assert format_now(later) == "2026-01-02T03:04:05.678Z"
    assert format_now(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"


def test_to_string_writes_json_number_text() -> None:
    assert evaluate("toString(6 / 2)", {}, CLOCK) == "3"
    assert evaluate("toString([1.0, 2.5, false])", {}, CLOCK) == "[1,2.5,false]"


def test_non_serializable_results_are_refused() -> None:
    assert code_of("$len") == EXPR_NOT_SERIALIZABLE
    assert code_of("/ab/") == EXPR_NOT_SERIALIZABLE


def test_runtime_errors_have_a_stated_code() -> None:
    assert code_of('"a" + 1') == EXPR_EVALUATION
    assert code_of("len()") == EXPR_EVALUATION
    assert code_of("append(1)") == EXPR_EVALUATION


def test_results_are_fresh_copies_of_the_context() -> None:
    context: dict[str, Any] = {"payload": {"o": {"a": [1]}}}
    value = evaluate("payload.o", context, CLOCK)
    value["a"].append(2)
    assert context == {"payload": {"o": {"a": [1]}}}


def test_compile_is_cached_by_source_and_options() -> None:
    assert compile("1 + 1") is compile("1 + 1")
    assert compile("1 + 1") is not compile("1 + 1", step_budget=5)
    assert isinstance(compile("1 + 1"), CompiledExpression)


def test_cli_check_and_bad_input() -> None:
    runner = CliRunner()
    ok = runner.invoke(flowledger.cli.app, ["expr", "check", "len('a')", "--json"], env={})
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["valid"] is True
    bad = runner.invoke(
        flowledger.cli.app, ["expr", "eval", "1", "--input", "{nope", "--json"], env={}
    )
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["error"]["code"] == "INVALID_INPUT"


# -- properties --------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "payload",
        ".",
        "a",
        "b",
        "items",
        "[",
        "]",
        "(",
        ")",
        "{",
        "}",
        ",",
        ":",
        ";",
        "=",
        "==",
        "!=",
        ">",
        "<",
        "+",
        "-",
        "*",
        "/",
        "%",
        "&",
        "and",
        "or",
        "in",
        "?",
        "??",
        "?:",
        "..",
        "~>",
        "$",
        "$x",
        ":=",
        "len",
        "coalesce",
        "toString",
        "append",
        "nowIso",
        "$sum",
        "sum",
        "function",
        "'s'",
        '"a==b"',
        "1",
        "2.5",
        "true",
        "null",
        "^",
        "#",
        "@",
        "|",
        "`q`",
        "/*",
        "*/",
        " ",
    ]
)
_TEXT = st.one_of(st.text(max_size=40), st.lists(_PIECES, max_size=25).map("".join))
_CONTEXT = {"payload": {"a": 1, "b": "x", "items": [{"a": 1}, {"a": 5}]}}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_any_text_compiles_or_is_refused_with_a_stated_code(source: str) -> None:
    try:
        compiled = compile(source)
    except ExpressionError as exc:
        assert exc.code in CODES
        return
    assert isinstance(compiled, CompiledExpression)
    try:
        compiled.evaluate(_CONTEXT, CLOCK)
    except ExpressionError as exc:
        assert exc.code in CODES


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_evaluation_is_deterministic(source: str) -> None:
    def outcome() -> tuple[str, Any]:
        try:
            return ("value", compile(source).evaluate(_CONTEXT, CLOCK))
        except ExpressionError as exc:
            return ("error", (exc.code, exc.message))

    assert outcome() == outcome()
