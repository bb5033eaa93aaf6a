"""Definition validation without sockets: every problem kind with its exact step path
and code, the examples, the canonical hash, and `definitions validate` through the CLI."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

import flowledger.cli
from flowledger.settings import ExpressionSettings, Settings, WorkflowSettings
from workflows.definitions.canonical import canonical_json, definition_hash
from workflows.definitions.model import (
    ActionCallStep,
    Definition,
    IfStep,
    TryCatchStep,
    definition_json_schema,
)
from workflows.definitions.validate import DefinitionInvalid, Problem, parse, validate

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "definitions"

if not any(group.name == "definitions" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return document


def doc(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "id": "demo",
        "version": 1,
        "tenant": "acme",
        "name": "demo",
        "description": "",
        "steps": list(steps) or [assign("only")],
        **top,
    }


def assign(step_id: str, **targets: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "assign", "assign": targets or {"vars.x": 1}}


def wait(step_id: str = "w", **fields: Any) -> dict[str, Any]:
    base = {
        "id": step_id,
        "type": "event.wait",
        "event_type": "payment.captured",
        "correlation_key": {"$expr": "payload.order_id"},
    }
    return {**base, **fields}


def call(step_id: str = "a", **fields: Any) -> dict[str, Any]:
    base = {
        "id": step_id,
        "type": "action.call",
        "action": "core.log",
        "version": 1,
        "input": {"message": "hi"},
    }
    return {**base, **fields}


def found(document: Any, settings: Settings | None = None) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in validate(document, settings or Settings())]


# -- the examples --------------------------------------------------------------


def test_order_fulfilment_example_is_valid() -> None:
    document = load("order-fulfilment.json")
    assert validate(document, Settings()) == []
    definition = parse(document, Settings())
    assert isinstance(definition, Definition)
    assert definition.tenant == "acme"
    assert definition.trigger is not None and definition.trigger.event_type == "order.placed"
    guard = definition.steps[2]
    assert isinstance(guard, TryCatchStep)
    assert guard.try_[0].type == "event.wait"


def test_ticket_escalation_example_is_valid() -> None:
    assert found(load("ticket-escalation.json")) == []


def test_ticket_escalation_is_the_shared_contract_unchanged() -> None:
    # The contract's example is copied into tests/contract/ like the other vectors.
    contract = REPO / "tests" / "contract" / "definition-example.json"
    assert (EXAMPLES / "ticket-escalation.json").read_bytes() == contract.read_bytes()


def test_parsed_model_keeps_expressions_apart_from_literals() -> None:
    definition = parse(load("order-fulfilment.json"))
    first, check = definition.steps[0], definition.steps[1]
    assert isinstance(first, ActionCallStep) and isinstance(check, IfStep)
    assert first.retry is not None and first.retry.max_attempts == 3
    assert first.input["level"] == "INFO"
    assert (
        getattr(first.input["message"], "expr", None) == "'order ' & payload.order_id & ' received'"
    )
    assert check.else_[0].id == "mark-small"


# -- one test per problem kind -------------------------------------------------


CASES: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {
    "unknown step type": (
        doc({"id": "a", "type": "control.while"}),
        [("root.steps[0].type", "DEFINITION_UNKNOWN_STEP_TYPE")],
    ),
    "missing step type": (
        doc({"id": "a"}),
        [("root.steps[0].type", "DEFINITION_FIELD_MISSING")],
    ),
    "unknown step field": (
        doc({**assign("a"), "colour": "red"}),
        [("root.steps[0].colour", "DEFINITION_UNKNOWN_FIELD")],
    ),
    "unknown nested field": (
        doc(call(retry={"max_attempts": 2, "jitter": True})),
        [("root.steps[0].retry.jitter", "DEFINITION_UNKNOWN_FIELD")],
    ),
    "unknown top-level field": (
        doc(owner="ops"),
        [("root.owner", "DEFINITION_UNKNOWN_FIELD")],
    ),
    "missing step field": (
        doc({"id": "a", "type": "action.call", "version": 1}),
        [("root.steps[0].action", "DEFINITION_FIELD_MISSING")],
    ),
    "missing step id": (
        doc({"type": "assign", "assign": {"vars.x": 1}}),
        [("root.steps[0].id", "DEFINITION_FIELD_MISSING")],
    ),
    "version as text": (
        doc(version="1"),
        [("root.version", "DEFINITION_FIELD_INVALID")],
    ),
    "version zero": (
        doc(version=0),
        [("root.version", "DEFINITION_FIELD_INVALID")],
    ),
    "no steps": (
        {**doc(), "steps": []},
        [("root.steps", "DEFINITION_FIELD_INVALID")],
    ),
    "disallowed function deep inside": (
        doc(
            {
                "id": "if",
                "type": "control.if",
                "condition": True,
                "then": [assign("t", **{"vars.x": {"$expr": "$eval('1')"}})],
            }
        ),
        [("root.steps[0].then.steps[0].assign.vars.x", "EXPR_DISALLOWED_FUNCTION")],
    ),
    "expression syntax": (
        doc({"id": "if", "type": "control.if", "condition": {"$expr": "payload.("}, "then": []}),
        [("root.steps[0].condition", "EXPR_SYNTAX")],
    ),
    "expression object with extra keys": (
        doc({"id": "r", "type": "control.return", "output": {"$expr": "1", "note": "x"}}),
        [("root.steps[0].output", "DEFINITION_FIELD_INVALID")],
    ),
    "literal condition not boolean": (
        doc({"id": "if", "type": "control.if", "condition": "yes", "then": []}),
        [("root.steps[0].condition", "DEFINITION_FIELD_INVALID")],
    ),
    "literal items not an array": (
        doc({"id": "fe", "type": "control.forEach", "items": {"a": 1}, "body": []}),
        [("root.steps[0].items", "DEFINITION_FIELD_INVALID")],
    ),
    "retry on assign": (
        doc({**assign("a"), "retry": {"max_attempts": 2}}),
        [("root.steps[0].retry", "DEFINITION_RETRY_NOT_ALLOWED")],
    ),
    "on_error on event.wait": (
        doc(wait(on_error="continue")),
        [("root.steps[0].on_error", "DEFINITION_ON_ERROR_NOT_ALLOWED")],
    ),
    "retry in a nested try": (
        doc(
            {
                "id": "tc",
                "type": "control.tryCatch",
                "try": [wait(retry={"max_attempts": 2})],
                "catch": [],
            }
        ),
        [("root.steps[0].try.steps[0].retry", "DEFINITION_RETRY_NOT_ALLOWED")],
    ),
    "forEach concurrency": (
        doc({"id": "fe", "type": "control.forEach", "items": [1], "body": [], "concurrency": 4}),
        [("root.steps[0].concurrency", "DEFINITION_FOREACH_CONCURRENCY")],
    ),
    "forEach parallel": (
        doc({"id": "fe", "type": "control.forEach", "items": [1], "body": [], "parallel": True}),
        [("root.steps[0].parallel", "DEFINITION_FOREACH_CONCURRENCY")],
    ),
    "forEach item_var shadowing a loop local": (
        doc({"id": "fe", "type": "control.forEach", "items": [1], "item_var": "index", "body": []}),
        [("root.steps[0].item_var", "DEFINITION_FIELD_INVALID")],
    ),
    "wait without event_type": (
        doc({k: v for k, v in wait().items() if k != "event_type"}),
        [("root.steps[0].event_type", "DEFINITION_WAIT_INCOMPLETE")],
    ),
    "wait without correlation_key": (
        doc({k: v for k, v in wait().items() if k != "correlation_key"}),
        [("root.steps[0].correlation_key", "DEFINITION_WAIT_INCOMPLETE")],
    ),
    "wait with a null correlation_key": (
        doc(wait(correlation_key=None)),
        [("root.steps[0].correlation_key", "DEFINITION_WAIT_INCOMPLETE")],
    ),
    "duplicate step id in a nested branch": (
        doc(
            assign("same"),
            {
                "id": "if",
                "type": "control.if",
                "condition": True,
                "then": [],
                "else": [assign("same")],
            },
        ),
        [("root.steps[1].else.steps[0].id", "DEFINITION_DUPLICATE_STEP_ID")],
    ),
    "filter in without an array": (
        doc(wait(filters=[{"path": "status", "op": "in", "value": "captured"}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter not_in without an array": (
        doc(wait(filters=[{"path": "status", "op": "not_in", "value": 3}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter > with a string": (
        doc(wait(filters=[{"path": "amount", "op": ">", "value": "5"}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter <= with a boolean": (
        doc(wait(filters=[{"path": "amount", "op": "<=", "value": True}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter contains with a number": (
        doc(wait(filters=[{"path": "note", "op": "contains", "value": 3}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter starts_with with an array": (
        doc(wait(filters=[{"path": "note", "op": "starts_with", "value": ["a"]}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter exists with a value": (
        doc(wait(filters=[{"path": "note", "op": "exists", "value": True}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter = without a value": (
        doc(wait(filters=[{"path": "note", "op": "="}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "filter with an unknown op": (
        doc(wait(filters=[{"path": "note", "op": "~=", "value": "x"}])),
        [("root.steps[0].filters[0].op", "DEFINITION_FILTER_INVALID")],
    ),
    "filter path with an empty segment, in a nested step": (
        doc(
            {
                "id": "if",
                "type": "control.if",
                "condition": True,
                "then": [wait(filters=[{"path": "a..b", "op": "!=", "value": 1}])],
            }
        ),
        [("root.steps[0].then.steps[0].filters[0].path", "DEFINITION_FILTER_INVALID")],
    ),
    "filter path with a trailing dot": (
        doc(wait(filters=[{"path": "$.a.", "op": "exists"}])),
        [("root.steps[0].filters[0].path", "DEFINITION_FILTER_INVALID")],
    ),
    "filter value as an expression": (
        doc(wait(filters=[{"path": "n", "op": "=", "value": {"$expr": "payload.n"}}])),
        [("root.steps[0].filters[0].value", "DEFINITION_FILTER_INVALID")],
    ),
    "unknown action": (
        doc(call(action="core.teleport")),
        [("root.steps[0].action", "DEFINITION_ACTION_UNKNOWN")],
    ),
    "unknown action version": (
        doc(call(version=9)),
        [("root.steps[0].version", "DEFINITION_ACTION_UNKNOWN")],
    ),
    "literal action input that cannot match": (
        doc(call(input={"level": "LOUD"})),
        [
            ("root.steps[0].input.message", "DEFINITION_ACTION_INPUT_INVALID"),
            ("root.steps[0].input.level", "DEFINITION_ACTION_INPUT_INVALID"),
        ],
    ),
    "unknown action input": (
        doc(call(input={"message": "hi", "colour": "red"})),
        [("root.steps[0].input.colour", "DEFINITION_ACTION_INPUT_INVALID")],
    ),
    "assign target outside the roots": (
        doc(assign("a", **{"output.total": 1})),
        [("root.steps[0].assign.output.total", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "assign target is a bare root": (
        doc(assign("a", vars=1)),
        [("root.steps[0].assign.vars", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "assign target through __proto__": (
        doc(assign("a", **{"vars.__proto__.admin": True})),
        [("root.steps[0].assign.vars.__proto__.admin", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "assign target through constructor": (
        doc(assign("a", **{"payload.constructor": 1})),
        [("root.steps[0].assign.payload.constructor", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "save_as outside the roots": (
        doc(call(save_as="result")),
        [("root.steps[0].save_as", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "wait assign target with prototype": (
        doc(wait(assign={"local.prototype": 1})),
        [("root.steps[0].assign.local.prototype", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "capture_error_as is a path": (
        doc(
            {
                "id": "tc",
                "type": "control.tryCatch",
                "try": [],
                "catch": [],
                "capture_error_as": "vars.err",
            }
        ),
        [("root.steps[0].capture_error_as", "DEFINITION_ASSIGN_TARGET_INVALID")],
    ),
    "time.wait with both duration and until": (
        doc(
            {
                "id": "t",
                "type": "time.wait",
                "duration_ms": 10,
                "until": "2026-01-01T00:00:00Z",
            }
        ),
        [("root.steps[0]", "DEFINITION_TIME_WAIT_INVALID")],
    ),
    "time.wait with neither": (
        doc({"id": "t", "type": "time.wait"}),
        [("root.steps[0]", "DEFINITION_TIME_WAIT_INVALID")],
    ),
    "time.wait until without an offset": (
        doc({"id": "t", "type": "time.wait", "until": "2026-01-01T00:00:00"}),
        [("root.steps[0].until", "DEFINITION_FIELD_INVALID")],
    ),
    "human.task is accepted": (
        doc({"id": "h", "type": "human.task", "task_type": "review", "title": "Review"}),
        [],
    ),
    "callWorkflow takes retry": (
        doc(
            {
                "id": "c",
                "type": "control.callWorkflow",
                "definition_id": "child",
                "retry": {"max_attempts": 2},
                "output": {"vars.child": {"$expr": "child.output"}},
            }
        ),
        [],
    ),
    "callWorkflow output target and on_error": (
        doc(
            {
                "id": "c",
                "type": "control.callWorkflow",
                "definition_id": "child",
                "on_error": "continue",
                "output": {"child": 1},
            }
        ),
        [
            ("root.steps[0].output.child", "DEFINITION_ASSIGN_TARGET_INVALID"),
            ("root.steps[0].on_error", "DEFINITION_ON_ERROR_NOT_ALLOWED"),
        ],
    ),
    "trigger payload_mapping expression": (
        doc(
            trigger={
                "type": "event",
                "event_type": "order.placed",
                "payload_mapping": {"when": {"$expr": "$now()"}},
            }
        ),
        [("root.trigger.payload_mapping.when", "EXPR_DISALLOWED_FUNCTION")],
    ),
    "trigger of another type": (
        doc(trigger={"type": "webhook", "event_type": "x"}),
        [("root.trigger.type", "DEFINITION_FIELD_INVALID")],
    ),
    "payload_schema that is not a JSON Schema": (
        doc(payload_schema={"type": "objekt"}),
        [("root.payload_schema.type", "DEFINITION_SCHEMA_INVALID")],
    ),
    "retry_on naming a category that is never retried": (
        doc(call(retry={"max_attempts": 2, "retry_on": ["Cancellation"]})),
        [("root.steps[0].retry.retry_on[0]", "DEFINITION_FIELD_INVALID")],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_problem_kind(name: str) -> None:
    document, expected = CASES[name]
    assert found(document) == expected


def test_too_large() -> None:
    small = Settings(workflows=WorkflowSettings(max_definition_bytes=1024))
    document = doc(description="x" * 2000)
    assert found(document, small) == [("root", "DEFINITION_TOO_LARGE")]
    assert found(document) == []


def test_nan_is_not_json() -> None:
    document = doc(assign("a", **{"vars.x": math.nan}))
    assert ("root", "DEFINITION_FIELD_INVALID") in found(document)


def test_expressions_use_the_extra_functions_from_settings() -> None:
    document = doc(assign("a", **{"vars.x": {"$expr": "$uppercase('a')"}}))
    assert found(document) == [("root.steps[0].assign.vars.x", "EXPR_DISALLOWED_FUNCTION")]
    wider = Settings(expressions=ExpressionSettings(extra_functions=["uppercase"]))
    assert found(document, wider) == []


def test_every_problem_is_listed() -> None:
    document = doc(
        {**assign("a", **{"other.x": {"$expr": "$eval('x')"}}), "retry": {"max_attempts": 2}},
        {
            "id": "loop",
            "type": "control.forEach",
            "items": {"$expr": "payload.items"},
            "parallel": True,
            "body": [
                call("a", action="core.nope"),
                {"id": "x", "type": "control.sleep"},
                wait("w", correlation_key=None, filters=[{"path": "n", "op": ">", "value": "1"}]),
            ],
        },
        version=-1,
    )
    assert found(document) == [
        ("root.version", "DEFINITION_FIELD_INVALID"),
        ("root.steps[0].assign.other.x", "DEFINITION_ASSIGN_TARGET_INVALID"),
        ("root.steps[0].assign.other.x", "EXPR_DISALLOWED_FUNCTION"),
        ("root.steps[0].retry", "DEFINITION_RETRY_NOT_ALLOWED"),
        ("root.steps[1].parallel", "DEFINITION_FOREACH_CONCURRENCY"),
        ("root.steps[1].body.steps[0].id", "DEFINITION_DUPLICATE_STEP_ID"),
        ("root.steps[1].body.steps[0].action", "DEFINITION_ACTION_UNKNOWN"),
        ("root.steps[1].body.steps[1].type", "DEFINITION_UNKNOWN_STEP_TYPE"),
        ("root.steps[1].body.steps[2].correlation_key", "DEFINITION_WAIT_INCOMPLETE"),
        ("root.steps[1].body.steps[2].filters[0].value", "DEFINITION_FILTER_INVALID"),
    ]


def test_a_document_that_is_not_an_object() -> None:
    assert found(["not", "a", "definition"]) == [("root", "DEFINITION_FIELD_INVALID")]


def test_parse_raises_with_every_problem() -> None:
    document = doc(assign("a", **{"x": 1}), assign("a"))
    with pytest.raises(DefinitionInvalid) as caught:
        parse(document)
    error = caught.value
    assert error.code == "DEFINITION_INVALID"
    assert [(p.path, p.code) for p in error.problems] == [
        ("root.steps[0].assign.x", "DEFINITION_ASSIGN_TARGET_INVALID"),
        ("root.steps[1].id", "DEFINITION_DUPLICATE_STEP_ID"),
    ]
    assert error.to_dict()["problems"] == [p.as_dict() for p in error.problems]
    assert all(isinstance(p, Problem) for p in error.problems)


# -- canonical JSON and the hash -----------------------------------------------


def reorder(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


def test_hash_is_stable_under_key_order() -> None:
    document = load("order-fulfilment.json")
    shuffled = reorder(copy.deepcopy(document))
    assert list(shuffled) != list(document)
    assert definition_hash(shuffled) == definition_hash(document)
    assert canonical_json(shuffled) == canonical_json(document)
    assert len(definition_hash(document)) == 64


def test_description_is_optional() -> None:
    document = doc()
    del document["description"]
    assert found(document) == []
    assert parse(document).description == ""


def test_hash_of_a_document_with_a_description_is_unchanged() -> None:
    # Pinned: runs started before description became optional name these hashes.
    assert definition_hash(doc()) == (
        "2a6140e5da68d92fb0fc2cac60871ff8c963a1d41f8e28e4f10edfc4ff82464a"
    )
    assert definition_hash(load("order-fulfilment.json")) == (
        "3e93c85a093080ac94262b628bbed5eb2a66b2ceeca02e022ac9ce1e0ec0796b"
    )


def test_a_missing_description_is_another_content_than_an_empty_one() -> None:
    # The hash is of the document as published (docs/decisions.md).
    document = doc()
    del document["description"]
    assert definition_hash(document) != definition_hash(doc())
    assert canonical_json(document) == canonical_json(doc()).replace('"description":"",', "")


def test_hash_changes_with_content() -> None:
    document = load("order-fulfilment.json")
    changed = copy.deepcopy(document)
    changed["description"] += "!"
    assert definition_hash(changed) != definition_hash(document)


def test_canonical_json_form() -> None:
    assert canonical_json({"b": [1, {"d": "é", "c": None}], "a": 1.5}) == (
        '{"a":1.5,"b":[1,{"c":null,"d":"é"}]}'
    )
    with pytest.raises(ValueError):
        canonical_json({"x": math.inf})


# -- the exported JSON Schema --------------------------------------------------


def test_json_schema_accepts_the_examples() -> None:
    schema = definition_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ("order-fulfilment.json", "ticket-escalation.json"):
        jsonschema.validate(load(name), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc({"id": "a", "type": "control.while"}), schema)


def test_exported_schema_file_is_current() -> None:
    exported = REPO / "schemas" / "json" / "definition.schema.json"
    on_disk = json.loads(exported.read_text(encoding="utf-8"))
    on_disk.pop("$schema", None)
    assert on_disk == definition_json_schema()


# -- `flowledger definitions validate` -----------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(
        flowledger.cli.app, list(args), obj={"settings": Settings()}, catch_exceptions=False
    )


def test_cli_validate_valid() -> None:
    result = invoke("definitions", "validate", str(EXAMPLES / "order-fulfilment.json"), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    document = load("order-fulfilment.json")
    assert body == {
        "valid": True,
        "hash": definition_hash(document),
        "id": "order-fulfilment",
        "version": 1,
        "tenant": "acme",
    }


def test_cli_validate_lists_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc(wait(correlation_key=None), wait())), encoding="utf-8")
    result = invoke("definitions", "validate", str(path), "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "DEFINITION_INVALID"
    assert [(p["path"], p["code"]) for p in error["problems"]] == [
        ("root.steps[0].correlation_key", "DEFINITION_WAIT_INCOMPLETE"),
        ("root.steps[1].id", "DEFINITION_DUPLICATE_STEP_ID"),
    ]
    assert all(p["message"] for p in error["problems"])


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": NaN}'])
def test_cli_validate_refuses_what_is_not_a_json_object(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    result = invoke("definitions", "validate", str(path), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "INVALID_INPUT"


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    result = invoke("definitions", "validate", str(tmp_path / "absent.json"), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "INVALID_INPUT"


def test_cli_validate_for_people() -> None:
    broken = REPO / "tests" / "fixtures" / "definitions" / "broken.json"
    result = invoke("definitions", "validate", str(broken))
    assert result.exit_code == 2
    # A rich table folds long cells at the test terminal's width.
    assert "1 problem(s)" in result.output
    assert "DEFINITION_INVALID" in result.output
