"""The inbox's pure parts: a form from a form_schema and back, the schema's errors at
their fields, the timeline's bars, and the tokens file keeping only digests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowledger.api import forms, timeline, tokens
from flowledger.errors import InvalidInput
from workflows.steps_effects import schema_problems

SCHEMA = {
    "type": "object",
    "required": ["ok", "count"],
    "properties": {
        "ok": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 1},
        "ratio": {"type": "number"},
        "level": {"enum": ["low", "high", 3]},
        "note": {"type": "string", "description": "why"},
    },
}


def test_fields_follow_the_schema() -> None:
    form = forms.fields(SCHEMA)
    assert [(f.name, f.kind, f.required) for f in form] == [
        ("ok", "boolean", True),
        ("count", "integer", True),
        ("ratio", "number", False),
        ("level", "enum", False),
        ("note", "string", False),
    ]
    assert forms.fields({"type": "object"}) == []


def test_posted_form_becomes_a_typed_response() -> None:
    form = forms.fields(SCHEMA)
    posted = {"ok": "true", "count": "4", "ratio": "0.5", "level": "3", "note": ""}
    assert forms.response(form, posted) == {"ok": True, "count": 4, "ratio": 0.5, "level": 3}
    # Unticked is false; text that is no number stays text, for the schema to refuse.
    typed = forms.response(form, {"count": "four"})
    assert typed == {"ok": False, "count": "four"}
    problems = schema_problems(SCHEMA, typed)
    assert set(forms.errors_by_field(problems)) == {"count"}


def test_missing_required_field_is_shown_at_that_field() -> None:
    problems = schema_problems(SCHEMA, {"ok": True})
    assert forms.errors_by_field(problems) == {"count": ["'count' is a required property"]}
    html = forms.render(forms.fields(SCHEMA), {"ok": True}, forms.errors_by_field(problems))
    assert '<div class="error" data-field="count">' in html
    assert 'type="checkbox" id="f-ok" name="ok" value="true" checked' in html


def test_rendering_escapes_values() -> None:
    html = forms.render(forms.fields(SCHEMA), {"note": '"><script>'})
    assert "<script>" not in html and "&quot;&gt;&lt;script&gt;" in html


def test_timeline_has_a_bar_per_step_and_wait() -> None:
    doc = {
        "steps": [
            {
                "step_path": f"root.steps[{i}]",
                "step_type": "assign",
                "status": "SUCCEEDED",
                "started_at": f"2026-01-01T00:00:0{i}+00:00",
                "completed_at": f"2026-01-01T00:00:0{i + 1}+00:00",
            }
            for i in range(3)
        ],
        "waits": [
            {
                "wait_type": "event",
                "event_type": "paid",
                "status": "RESOLVED",
                "created_at": "2026-01-01T00:00:01+00:00",
                "resolved_at": "2026-01-01T00:00:02+00:00",
                "matched_event_id": "e-1",
            }
        ],
    }
    svg = timeline.svg(doc, datetime(2026, 1, 1, tzinfo=UTC))
    assert svg.count('class="step-bar"') == 3 and svg.count('class="wait-bar"') == 1
    assert "resumed by event e-1" in svg
    assert "no steps yet" in timeline.svg({"steps": [], "waits": []}, datetime.now(UTC))


def test_tokens_file_keeps_digests_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    made = tokens.create(path, tenants=["a", "b", " "], role="reader")
    assert made["tenants"] == ["a", "b"]
    assert made["token"] not in path.read_text()
    assert json.loads(path.read_text())["tokens"][0]["sha256"] == tokens.digest(made["token"])
    assert path.stat().st_mode & 0o077 == 0
    store = tokens.TokenStore(path)
    found = store.find(made["token"])
    assert found is not None and found.role == "reader" and found.tenants == {"a", "b"}
    assert store.find("flt_wrong") is None
    with pytest.raises(InvalidInput):
        tokens.create(path, tenants=["a"], role="admin")
    first = tokens.ensure_development(path, ["acme"])
    assert first is not None and tokens.ensure_development(path, ["acme"]) is None
    assert store.find(first) is not None  # read again after the file changed
