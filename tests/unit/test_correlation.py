"""Correlation: configuration refusals, resolution order and edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from processors.correlation import (
    MISSING_DETAIL,
    NO_PATHS,
    Correlation,
    CorrelationConfigError,
    CorrelationPaths,
    load_paths,
    resolve,
)


def event(payload: Any = None, **envelope: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "6f1c2a3e-0000-4000-8000-000000000001",
        "event_type": "ticket.updated",
        "tenant": "acme",
        "payload": {} if payload is None else payload,
    }
    base.update(envelope)
    return base


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "",
        "[]",
        '"ticketId"',
        "42",
        "null",
        '{"*": 7}',
        '{"*": null}',
        '{"*": []}',
        '{"*": ["a", 7]}',
        '{"*": [["a"]]}',
        '{"*": {"a": "b"}}',
        '{"*": ""}',
        '{"*": "a..b"}',
        '{"*": ".a"}',
        '{"": "a"}',
    ],
)
def test_ill_typed_or_unparseable_config_is_refused(raw: str) -> None:
    with pytest.raises(CorrelationConfigError) as caught:
        load_paths(raw)
    assert caught.value.code == "CORRELATION_CONFIG_INVALID"


def test_mapping_and_file_configs_load(tmp_path: Path) -> None:
    document = {"ticket.updated": ["ticketId", " ticket.id "], "*": "entityId"}
    from_mapping = load_paths(document)
    file = tmp_path / "paths.json"
    file.write_text(json.dumps(document), encoding="utf-8")
    assert load_paths(None, file) == from_mapping == load_paths(json.dumps(document))
    assert from_mapping.for_event_type("ticket.updated") == ("ticketId", "ticket.id", "entityId")
    assert from_mapping.for_event_type("other") == ("entityId",)


def test_missing_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorrelationConfigError):
        load_paths(None, tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(CorrelationConfigError):
        load_paths(None, broken)


def test_inline_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CorrelationConfigError):
        load_paths('{"*": "a"}', tmp_path / "paths.json")


def test_nothing_configured_is_empty() -> None:
    assert load_paths(None) == NO_PATHS == CorrelationPaths()
    assert NO_PATHS.for_event_type("ticket.updated") == ()


def test_paths_are_immutable() -> None:
    paths = load_paths({"*": "a"})
    with pytest.raises(AttributeError):
        paths.by_event_type = ()  # type: ignore[misc]
    result = resolve(event({"a": "k"}), paths)
    with pytest.raises(AttributeError):
        result.key = "other"  # type: ignore[misc]


# -- ordering -----------------------------------------------------------------------------


def test_each_rule_wins_over_the_later_ones() -> None:
    paths = load_paths({"*": "ticketId"})
    full = {"workflowCorrelationKey": "W", "correlationKey": "C", "ticketId": "T"}
    assert resolve(event(full, workflow_correlation_key="E"), paths) == Correlation(
        "E", "explicit", "workflow_correlation_key"
    )
    assert resolve(event(full), paths) == Correlation(
        "W", "explicit", "payload.workflowCorrelationKey"
    )
    del full["workflowCorrelationKey"]
    assert resolve(event(full), paths) == Correlation("C", "explicit", "payload.correlationKey")
    del full["correlationKey"]
    assert resolve(event(full), paths) == Correlation("T", "derived", "path:ticketId")
    assert resolve(event({}), paths) == Correlation(None, "missing", MISSING_DETAIL)


def test_event_type_paths_come_before_wildcard_paths_whatever_the_order() -> None:
    payload = {"ticketId": "T", "entityId": "E"}
    for document in (
        {"*": "entityId", "ticket.updated": "ticketId"},
        {"ticket.updated": "ticketId", "*": "entityId"},
    ):
        assert resolve(event(payload), load_paths(document)).key == "T"


# -- edge cases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (42.0, "42"),
        (True, "true"),
        (False, "false"),
        ("  k  ", "k"),
        (0, "0"),
    ],
)
def test_scalars_become_keys(value: Any, key: str) -> None:
    result = resolve(event({"v": value}), load_paths({"*": "v"}))
    assert (result.key, result.source, result.detail) == (key, "derived", "path:v")


@pytest.mark.parametrize("value", [None, {}, {"a": 1}, [], ["a"], "", "   ", float("nan")])
def test_non_keys_are_skipped(value: Any) -> None:
    result = resolve(event({"v": value}), load_paths({"*": "v"}))
    assert result.source == "missing"


@pytest.mark.parametrize("value", [42, True, None, {"a": "b"}, ["x"], "  "])
def test_explicit_keys_must_be_non_blank_strings(value: Any) -> None:
    assert resolve(event({"correlationKey": value})).source == "missing"
    assert resolve(event(workflow_correlation_key=value)).source == "missing"


def test_event_id_is_never_a_key() -> None:
    paths = load_paths({"*": ["event_id", "id"]})
    result = resolve(event({}, id="x"), paths)
    assert result.source == "missing"


def test_payload_that_is_not_an_object_gives_no_key() -> None:
    paths = load_paths({"*": "0"})
    assert resolve(event(["a"]), paths).source == "missing"
    assert resolve({"event_type": "x"}, paths).source == "missing"


def test_nested_paths_only_walk_objects() -> None:
    payload = {"a": {"b": {"c": "deep"}}, "items": [{"id": "X"}]}
    assert resolve(event(payload), load_paths({"*": "a.b.c"})).key == "deep"
    assert resolve(event(payload), load_paths({"*": "items.0.id"})).source == "missing"
    assert resolve(event(payload), load_paths({"*": "a.b.c.d"})).source == "missing"


def test_result_as_dict() -> None:
    result = resolve(event({"correlationKey": "C"}))
    assert result.to_dict() == {
        "correlation_key": "C",
        "source": "explicit",
        "detail": "payload.correlationKey",
    }
