"""Event-wait filters: every op, with strict equality and type-checked comparisons."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.filters import all_match, matches, path_segments

PAYLOAD = {
    "status": "closed",
    "score": 3,
    "flag": True,
    "tags": ["a"],
    "name": "Ticket-9",
    "nested": {"level": 2},
    "nothing": None,
}

CASES: list[tuple[str, str, Any, bool]] = [
    ("status", "=", "closed", True),
    ("status", "=", "open", False),
    ("score", "=", 3.0, True),
    ("score", "=", "3", False),
    ("flag", "=", 1, False),
    ("status", "!=", "open", True),
    ("status", "!=", "closed", False),
    ("status", "in", ["open", "closed"], True),
    ("score", "in", ["3"], False),
    ("status", "not_in", ["open"], True),
    ("status", "not_in", ["closed"], False),
    ("status", "exists", None, True),
    ("nothing", "exists", None, True),
    ("missing", "exists", None, False),
    ("missing", "not_exists", None, True),
    ("status", "not_exists", None, False),
    ("score", ">", 2, True),
    ("score", ">", 3, False),
    ("score", ">=", 3, True),
    ("score", "<", 4, True),
    ("score", "<=", 2, False),
    ("status", ">", 1, False),
    ("score", ">", "2", False),
    ("flag", ">", 0, False),
    ("name", "contains", "ket", True),
    ("name", "contains", "x", False),
    ("tags", "contains", "a", False),
    ("name", "starts_with", "Tick", True),
    ("name", "starts_with", "ket", False),
    ("name", "ends_with", "-9", True),
    ("score", "ends_with", "3", False),
    ("nested.level", "=", 2, True),
    ("tags.0", "=", "a", True),
    ("missing", "=", None, False),
    ("status", "regex", ".*", False),
]


@pytest.mark.parametrize(("path", "op", "value", "expected"), CASES)
def test_op(path: str, op: str, value: Any, expected: bool) -> None:
    assert matches(PAYLOAD, {"path": path, "op": op, "value": value}) is expected


def test_all_filters_must_pass() -> None:
    assert all_match(
        PAYLOAD,
        [
            {"path": "status", "op": "=", "value": "closed"},
            {"path": "score", "op": ">=", "value": 3},
        ],
    )
    assert not all_match(
        PAYLOAD,
        [
            {"path": "status", "op": "=", "value": "closed"},
            {"path": "score", "op": ">", "value": 3},
        ],
    )
    assert all_match(PAYLOAD, [])


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("a", ["a"]),
        ("$.a.b", ["a", "b"]),
        (".a.b", ["a", "b"]),
        ("items.0.id", ["items", "0", "id"]),
        ("a..b", None),
        ("a.", None),
        ("$..a", None),
        ("..a", None),
        ("$.", None),
        (".", None),
        ("", None),
    ],
)
def test_path_segments(path: str, segments: list[str] | None) -> None:
    assert path_segments(path) == segments


def test_a_missing_field_is_unequal_to_everything_and_in_no_list() -> None:
    assert matches(PAYLOAD, {"path": "missing", "op": "!=", "value": None})
    assert matches(PAYLOAD, {"path": "$.nested.missing", "op": "not_in", "value": [None]})
    assert not matches(PAYLOAD, {"path": "missing", "op": "in", "value": [None]})
    # A path publish refuses matches nothing, whatever the op.
    assert not matches(PAYLOAD, {"path": "a..b", "op": "!=", "value": 1})
    assert not matches(PAYLOAD, {"path": "a..b", "op": "not_exists"})
