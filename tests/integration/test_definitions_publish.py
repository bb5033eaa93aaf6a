"""Publishing definitions to the real flowledger.definitions.v1: published, then a
no-op for the same content, refused for different content under the same version,
and read back by the store and through the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flowledger.cli
from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from topics.catalogue import DEFINITIONS
from topics.reader import read_all
from topics.serde import decode_definition
from workflows.definitions import store
from workflows.definitions.canonical import definition_hash
from workflows.definitions.validate import DefinitionInvalid

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "definitions" / "order-fulfilment.json"
BROKEN = REPO / "tests" / "fixtures" / "definitions" / "broken.json"

if not any(group.name == "definitions" for group in flowledger.cli.app.registered_groups):
    flowledger.cli._register()


def example() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return document


def on_topic(settings: Settings) -> list[Any]:
    return read_all(settings, settings.topic(DEFINITIONS))


def invoke(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(
        flowledger.cli.app, list(args), obj={"settings": settings}, catch_exceptions=False
    )


def test_publish_then_unchanged_then_refused(settings: Settings) -> None:
    document = example()
    first = store.publish(settings, document)
    assert first.outcome == "published" and first.published
    assert first.record.key() == "acme:order-fulfilment:1"
    assert first.record.hash == definition_hash(document)
    assert first.offset is not None

    records = on_topic(settings)
    assert len(records) == 1
    assert records[0].key == "acme:order-fulfilment:1"
    assert decode_definition(records[0].value).definition == document

    again = store.publish(settings, copy.deepcopy(document))
    assert again.outcome == "unchanged" and not again.published
    assert (again.partition, again.offset) == (first.partition, first.offset)
    assert len(on_topic(settings)) == 1

    changed = copy.deepcopy(document)
    changed["description"] = "something else"
    with pytest.raises(FlowledgerError) as caught:
        store.publish(settings, changed)
    error = caught.value
    assert error.code == "DEFINITION_VERSION_EXISTS"
    assert error.context["existing_hash"] == first.record.hash
    assert error.context["hash"] == definition_hash(changed)
    assert (error.context["tenant"], error.context["id"], error.context["version"]) == (
        "acme",
        "order-fulfilment",
        1,
    )
    assert len(on_topic(settings)) == 1


def test_latest_and_get(settings: Settings) -> None:
    document = example()
    assert store.latest(settings, "acme", "order-fulfilment") is None
    for version in (1, 3, 2):
        store.publish(settings, {**document, "version": version})
    other_tenant = {**document, "tenant": "globex", "version": 7}
    store.publish(settings, other_tenant)

    newest = store.latest(settings, "acme", "order-fulfilment")
    assert newest is not None and newest.version == 3
    second = store.get(settings, "acme", "order-fulfilment", 2)
    assert second is not None and second.definition["version"] == 2
    assert store.get(settings, "acme", "order-fulfilment", 4) is None
    assert set(store.published(settings)) == {
        ("acme", "order-fulfilment", 1),
        ("acme", "order-fulfilment", 2),
        ("acme", "order-fulfilment", 3),
        ("globex", "order-fulfilment", 7),
    }


def test_invalid_definition_is_not_published(settings: Settings) -> None:
    document = json.loads(BROKEN.read_text("utf-8"))
    with pytest.raises(DefinitionInvalid) as caught:
        store.publish(settings, document)
    assert [p.code for p in caught.value.problems] == ["EXPR_DISALLOWED_FUNCTION"]
    assert on_topic(settings) == []


def test_cli_publish(settings: Settings, tmp_path: Path) -> None:
    document = example()
    first = invoke(settings, "definitions", "publish", str(EXAMPLE), "--json")
    assert first.exit_code == 0, first.output
    body = json.loads(first.stdout)
    assert body["published"] is True and body["outcome"] == "published"
    assert body["hash"] == definition_hash(document)
    assert body["key"] == "acme:order-fulfilment:1"
    assert isinstance(body["partition"], int) and isinstance(body["offset"], int)

    again = invoke(settings, "definitions", "publish", str(EXAMPLE), "--json")
    assert again.exit_code == 0, again.output
    repeat = json.loads(again.stdout)
    assert repeat["published"] is False and repeat["outcome"] == "unchanged"
    assert repeat["hash"] == body["hash"]
    assert len(on_topic(settings)) == 1

    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**document, "name": "renamed"}), encoding="utf-8")
    refused = invoke(settings, "definitions", "publish", str(changed), "--json")
    assert refused.exit_code == 2
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "DEFINITION_VERSION_EXISTS"
    assert error["existing_hash"] == body["hash"]
    assert len(on_topic(settings)) == 1

    invalid = invoke(settings, "definitions", "publish", str(BROKEN), "--json")
    assert invalid.exit_code == 2
    problems = json.loads(invalid.stdout)["error"]["problems"]
    assert problems == [
        {
            "path": "root.steps[0].assign.vars.x",
            "code": "EXPR_DISALLOWED_FUNCTION",
            "message": problems[0]["message"],
        }
    ]

    people = invoke(settings, "definitions", "publish", str(EXAMPLE))
    assert people.exit_code == 0
    assert "unchanged" in people.output
