"""`flowledger api` against the real stack, as a real process: every v1 endpoint with
its success and error statuses, tenant isolation, run control through the operator
audit, and an event posted over HTTP resuming a waiting run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flowledger.api import tokens
from tests.integration.api_support import ApiDeployment, deploy
from tests.integration.runtime_support import REPO, component_env
from tests.stack_fixture import StackHandle
from tests.waiting import wait_for
from topics import clients
from topics.catalogue import EVENTS


@pytest.fixture(scope="module")
def api(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiDeployment]:
    yield from deploy(stack, tmp_path_factory.mktemp("api"))


def _definition(tenant: str, steps: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {
        "id": f"{name}-{uuid.uuid4().hex[:6]}",
        "version": 1,
        "tenant": tenant,
        "name": name,
        "steps": steps,
    }


QUICK = [
    {"id": "set", "type": "assign", "assign": {"vars.done": True}},
    {"id": "ret", "type": "control.return", "output": {"$expr": "{'done': vars.done}"}},
]
WAITING = [
    {
        "id": "wait",
        "type": "event.wait",
        "event_type": "parcel.arrived",
        "correlation_key": {"$expr": "payload.key"},
        "assign": {"vars.weight": {"$expr": "event.payload.weight"}},
    },
    {"id": "ret", "type": "control.return", "output": {"$expr": "{'weight': vars.weight}"}},
]
TASK = [
    {
        "id": "ask",
        "type": "human.task",
        "task_type": "approval",
        "title": "Approve",
        "description": "Approve it",
        "context": {"key": {"$expr": "payload.key"}},
        "form_schema": {
            "type": "object",
            "required": ["approved"],
            "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
            "additionalProperties": False,
        },
        "assign": {"vars.answer": {"$expr": "task.response"}},
    },
]


def _envelope(tenant: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "parcel.arrived",
        "tenant": tenant,
        "occurred_at": datetime.now(UTC).isoformat(),
        **extra,
    }


@pytest.fixture(scope="module")
def defs(api: ApiDeployment) -> dict[str, dict[str, Any]]:
    made = {
        "quick_a": _definition(api.tenant_a, QUICK, "quick"),
        "wait_a": _definition(api.tenant_a, WAITING, "wait"),
        "task_a": _definition(api.tenant_a, TASK, "task"),
        "quick_b": _definition(api.tenant_b, QUICK, "quick"),
    }
    for key, document in made.items():
        api.publish_definition(document, "op_b" if key.endswith("_b") else "op_a")
    return made


def test_service_endpoints(api: ApiDeployment) -> None:
    assert api.call("GET", "/healthz").json()["alive"] is True
    assert api.call("GET", "/readyz").json()["ready"] is True
    spec = api.call("GET", "/openapi.json").json()
    for path in ("/v1/events", "/v1/definitions:validate", "/v1/runs/{run_id}/cancel"):
        assert path in spec["paths"], sorted(spec["paths"])
    assert "swagger" in api.call("GET", "/docs").text.lower()
    api.call("GET", "/v1/runs", "read_a")
    metrics = api.call("GET", "/metrics").text
    assert 'flowledger_api_requests_total{method="GET",route="/v1/runs",status="200"}' in metrics


def test_authentication_and_roles(api: ApiDeployment, defs: dict[str, Any]) -> None:
    for token in (None, "not-a-token"):
        answer = api.call("GET", "/v1/runs", token)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "API_UNAUTHENTICATED"
        assert answer.headers["www-authenticate"] == "Bearer"
    refused = api.call("POST", "/v1/events", "read_a", json=_envelope(api.tenant_a))
    assert refused.status_code == 403 and refused.json()["code"] == "API_FORBIDDEN"
    one = _envelope(api.tenant_a)
    single = api.call("POST", "/v1/events", "pub_a", json=one)
    assert single.status_code == 202, single.text
    assert [(p["line"], p["event_id"]) for p in single.json()] == [(1, one["event_id"])]
    run_id = api.start(defs["quick_a"]["id"], {})
    cancel = api.call("POST", f"/v1/runs/{run_id}/cancel", "pub_a", json={"reason": "no"})
    assert cancel.status_code == 403
    # Publishing for another tenant: forbidden, nothing published.
    foreign = api.call("POST", "/v1/events", "pub_a", json=_envelope(api.tenant_b))
    assert foreign.status_code == 403 and foreign.json()["code"] == "API_TENANT_FORBIDDEN"
    other = api.call("POST", "/v1/definitions", "op_a", json=defs["quick_b"])
    assert other.status_code == 403


def test_every_endpoint_answers_401_and_403(api: ApiDeployment) -> None:
    spec = api.call("GET", "/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if path.startswith("/v1/")
    ]
    assert len(routes) == 19, routes
    some = str(uuid.uuid4())
    for method, template in routes:
        path = template.replace("{run_id}", some).replace("{task_id}", some)
        for token in (None, "not-a-token"):
            answer = api.call(method, path, token, json={})
            assert answer.status_code == 401, (method, template, token, answer.text)
            assert answer.json()["code"] == "API_UNAUTHENTICATED"
        if method == "POST" and template != "/v1/definitions:validate":
            # The role is checked before the body or the run is looked at.
            answer = api.call(method, path, "read_a", json={})
            assert answer.status_code == 403, (method, template, answer.text)
            assert answer.json()["code"] == "API_FORBIDDEN"


def test_publishing_is_in_the_operator_audit(api: ApiDeployment, defs: dict[str, Any]) -> None:
    name = f"audited-{uuid.uuid4().hex[:6]}"
    made = tokens.create(
        api.root / "api-tokens.json", tenants=[api.tenant_a], role="operator", name=name
    )
    token = str(made["token"])
    batch = "\n".join(json.dumps(_envelope(api.tenant_a)) for _ in range(2))
    assert api.call("POST", "/v1/events", token, content=batch).status_code == 202
    document = _definition(api.tenant_a, QUICK, "audited")
    assert api.call("POST", "/v1/definitions", token, json=document).status_code == 201
    broken = {**document, "steps": [{"id": "x", "type": "nope"}]}
    assert api.call("POST", "/v1/definitions", token, json=broken).status_code == 422
    # Refused before anything was attempted: not an operator action.
    foreign = api.call("POST", "/v1/events", token, json=_envelope(api.tenant_b))
    assert foreign.status_code == 403

    def recorded() -> list[dict[str, Any]]:
        found = api.call("GET", "/v1/audit/operators", "read_a", params={"limit": 10_000}).json()
        mine = [a for a in found if a["requested_by"] == name]
        return mine if len(mine) >= 3 else []

    actions = wait_for(recorded, 60, "the operator audit of the publishes")
    assert [(a["action"], a["outcome"], a["tenant"]) for a in actions] == [
        ("publish", "accepted", api.tenant_a),
        ("definition_publish", "accepted", api.tenant_a),
        ("definition_publish", "refused", api.tenant_a),
    ]
    assert actions[0]["details"] == {"events": 2}
    assert actions[1]["details"] == {
        "definition_id": document["id"],
        "version": 1,
        "outcome": "published",
    }
    assert actions[2]["code"] == "DEFINITION_INVALID"
    theirs = api.call("GET", "/v1/audit/operators", "op_b", params={"limit": 10_000}).json()
    assert not [a for a in theirs if a["requested_by"] == name]


def test_token_create_cli(api: ApiDeployment) -> None:
    env = component_env(api.settings)
    env["FLOWLEDGER_API__TOKENS_FILE"] = str(api.root / "api-tokens.json")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "flowledger"),
            *("api", "token", "create", "--tenant", api.tenant_a, "--role", "reader", "--json"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert set(created) == {"token"}
    stored = (api.root / "api-tokens.json").read_text()
    assert created["token"] not in stored
    assert api.call("GET", "/v1/tasks", created["token"]).status_code == 200


def test_definitions_endpoints(api: ApiDeployment, defs: dict[str, Any]) -> None:
    good = api.call("POST", "/v1/definitions:validate", "read_a", json=defs["wait_a"])
    assert good.status_code == 200 and good.json()["valid"] is True
    broken = {**defs["wait_a"], "steps": [{"id": "x", "type": "nope"}, {"type": "assign"}]}
    bad = api.call("POST", "/v1/definitions:validate", "read_a", json=broken)
    assert bad.status_code == 422
    assert bad.json()["code"] == "DEFINITION_INVALID" and len(bad.json()["problems"]) >= 2
    assert api.call("POST", "/v1/definitions", "op_a", json=broken).status_code == 422
    notjson = api.call("POST", "/v1/definitions", "op_a", content=b"{nope")
    assert notjson.status_code == 422
    again = api.call("POST", "/v1/definitions", "op_a", json=defs["wait_a"])
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"

    # Other tests publish definitions of their own for tenant A.
    wanted = {d["id"] for key, d in defs.items() if key.endswith("_a")}

    def listed() -> list[dict[str, Any]]:
        found = api.call("GET", "/v1/definitions", "read_a").json()
        return found if wanted <= {d["definition_id"] for d in found} else []

    items = wait_for(listed, 60, "the three definitions of tenant A")
    assert {d["tenant"] for d in items} == {api.tenant_a}


def test_event_over_http_resumes_waiting_run(api: ApiDeployment, defs: dict[str, Any]) -> None:
    key = f"k-{uuid.uuid4().hex[:6]}"
    run_id = api.start(defs["wait_a"]["id"], {"key": key})
    api.run_status(run_id, "WAITING")
    bad_lines = "\n".join(
        [
            json.dumps(_envelope(api.tenant_a, workflow_correlation_key=key)),
            json.dumps({"event_type": "x"}),
            "not json",
        ]
    )
    refused = api.call(
        "POST",
        "/v1/events",
        "pub_a",
        content=bad_lines,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert refused.status_code == 422, refused.text
    assert [e["line"] for e in refused.json()["errors"]] == [2, 3]
    # Nothing of the refused batch was published: the run still waits.
    assert api.run(run_id)["run"]["status"] == "WAITING"
    event = _envelope(api.tenant_a, workflow_correlation_key=key, payload={"weight": 7})
    batch = "\n".join([json.dumps(event), json.dumps(_envelope(api.tenant_a))])
    accepted = api.call("POST", "/v1/events", "pub_a", content=batch)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert [p["line"] for p in body] == [1, 2]
    assert body[0]["event_id"] == event["event_id"]
    assert all(isinstance(p["partition"], int) and isinstance(p["offset"], int) for p in body)
    done = api.run_status(run_id, "SUCCEEDED")
    assert done["run"]["output"] == {"weight": 7}
    wait = done["waits"][0]
    assert wait["status"] == "RESOLVED" and wait["matched_event_id"] == event["event_id"]
    by_key = api.call("GET", "/v1/runs", "read_a", params={"correlation_key": key}).json()
    assert [r["run_id"] for r in by_key] == [run_id]

    def audited() -> list[dict[str, Any]]:
        found = api.call("GET", "/v1/audit", "read_a", params={"correlation_key": key}).json()
        return found if found and found[0]["deliveries"] else []

    audit = wait_for(audited, 60, "the audit of the event")
    assert audit[0]["event_id"] == event["event_id"]
    assert api.call("GET", "/v1/audit", "op_b", params={"correlation_key": key}).json() == []
    waits = api.call("GET", "/v1/waits", "read_a", params={"run_id": run_id}).json()
    assert [w["status"] for w in waits] == ["RESOLVED"]
    assert api.call("GET", "/v1/waits", "op_b", params={"run_id": run_id}).json() == []
    assert api.call("GET", "/v1/waits", "read_a", params={"status": "nope"}).status_code == 422


def test_run_control(api: ApiDeployment, defs: dict[str, Any]) -> None:
    waiting = api.start(defs["wait_a"]["id"], {"key": f"never-{uuid.uuid4().hex[:6]}"})
    api.run_status(waiting, "WAITING")
    for action in ("resume", "retry", "requeue"):
        answer = api.call("POST", f"/v1/runs/{waiting}/{action}", "op_a", json={"reason": "try it"})
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert body["code"] == "WORKFLOW_TEMPORAL_ACTION_UNSUPPORTED"
        assert (body["action"], body["engine"], body["run_id"]) == (action, "temporal", waiting)
        assert body["hint"]
    assert api.run(waiting)["run"]["status"] == "WAITING"
    unknown = api.call("POST", f"/v1/runs/{uuid.uuid4()}/cancel", "op_a", json={"reason": "gone"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "RUN_NOT_FOUND"
    foreign = api.call("POST", f"/v1/runs/{waiting}/cancel", "op_b", json={"reason": "mine"})
    assert foreign.status_code == 404 and foreign.json() == unknown.json() | {
        "message": foreign.json()["message"],
        "run_id": waiting,
    }
    assert api.call("POST", f"/v1/runs/{waiting}/cancel", "op_a", json={}).status_code == 422
    cancel = api.call("POST", f"/v1/runs/{waiting}/cancel", "op_a", json={"reason": "stop now"})
    assert cancel.status_code == 200 and cancel.json()["ok"] is True
    api.run_status(waiting, "CANCELED")

    quick = api.start(defs["quick_a"]["id"], {})
    api.run_status(quick, "SUCCEEDED")
    late = api.call("POST", f"/v1/runs/{quick}/cancel", "op_a", json={"reason": "too late"})
    assert late.status_code == 409 and late.json()["code"] == "WORKFLOW_TEMPORAL_CANCEL_FAILED"
    rerun = api.call("POST", f"/v1/runs/{quick}/rerun", "op_a", json={"reason": "once more"})
    assert rerun.status_code == 200, rerun.text
    api.run_status(rerun.json()["run_id"], "SUCCEEDED")
    terminated = api.start(defs["wait_a"]["id"], {"key": "never"})
    api.run_status(terminated, "WAITING")
    stop = api.call("POST", f"/v1/runs/{terminated}/terminate", "op_a", json={"reason": "halt"})
    assert stop.status_code == 200, stop.text

    def recorded() -> list[dict[str, Any]]:
        found = api.call("GET", "/v1/audit/operators", "read_a", params={"run_id": waiting}).json()
        return found if len(found) >= 5 else []

    actions = wait_for(recorded, 60, "the operator audit of the run")
    assert [(a["action"], a["outcome"]) for a in actions] == [
        ("start", "accepted"),
        ("resume", "refused"),
        ("retry", "refused"),
        ("requeue", "refused"),
        ("cancel", "accepted"),
    ]
    assert {a["requested_by"] for a in actions} == {
        next(iter({a["requested_by"] for a in actions}))
    }
    assert actions[0]["requested_by"].startswith("op_a-")
    assert api.call("GET", "/v1/audit/operators", "op_b", params={"run_id": waiting}).json() == []


def test_start_refusals(api: ApiDeployment, defs: dict[str, Any]) -> None:
    missing = api.call("POST", "/v1/runs", "op_a", json={"tenant": api.tenant_a})
    assert missing.status_code == 422 and missing.json()["code"] == "API_REQUEST_INVALID"
    unknown = {"definition_id": "nope", "tenant": api.tenant_a}
    assert api.call("POST", "/v1/runs", "op_a", json=unknown).status_code == 404
    foreign = {"definition_id": defs["quick_b"]["id"], "tenant": api.tenant_b}
    assert api.call("POST", "/v1/runs", "op_a", json=foreign).status_code == 403
    assert api.call("GET", f"/v1/runs/{uuid.uuid4()}", "read_a").status_code == 404


def test_tenant_isolation_and_pages(api: ApiDeployment, defs: dict[str, Any]) -> None:
    mine = [api.start(defs["quick_a"]["id"], {"n": n}) for n in range(3)]
    theirs = api.start(defs["quick_b"]["id"], {}, token="op_b")
    for run_id in mine:
        api.run_status(run_id, "SUCCEEDED")
    wait_for(lambda: api.call("GET", f"/v1/runs/{theirs}", "op_b").status_code == 200, 60, "B")
    assert api.call("GET", f"/v1/runs/{theirs}", "op_a").status_code == 404
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.call("GET", "/v1/runs", "read_a", params=params)
        assert page.status_code == 200
        seen += [r["run_id"] for r in page.json()]
        assert {r["tenant"] for r in page.json()} <= {api.tenant_a}
        cursor = page.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(mine) <= set(seen) and theirs not in seen
    asked = api.call("GET", "/v1/runs", "read_a", params={"tenant": api.tenant_b}).json()
    assert asked == []
    assert api.call("GET", "/v1/runs", "read_a", params={"cursor": "!!"}).status_code == 422
    assert api.call("GET", "/v1/runs", "read_a", params={"status": "nope"}).status_code == 422
    by_definition = api.call(
        "GET", "/v1/runs", "read_a", params={"definition": defs["quick_a"]["id"]}
    ).json()
    assert set(mine) <= {r["run_id"] for r in by_definition}
    assert {r["definition_id"] for r in by_definition} == {defs["quick_a"]["id"]}
    b_runs = api.call("GET", "/v1/runs", "op_b").json()
    assert [r["run_id"] for r in b_runs] == [theirs]


def test_tasks_endpoints(api: ApiDeployment, defs: dict[str, Any]) -> None:
    run_id = api.start(defs["task_a"]["id"], {"key": "t1"})

    def open_task() -> list[dict[str, Any]]:
        found = api.call("GET", "/v1/tasks", "read_a", params={"run_id": run_id}).json()
        return [t for t in found if t["status"] == "OPEN"]

    task = wait_for(open_task, 90, "the open task")[0]
    assert api.call("GET", "/v1/tasks", "op_b").json() == []
    path = f"/v1/tasks/{task['task_id']}/complete"
    assert api.call("POST", path, "op_b", json={"data": {"approved": True}}).status_code == 404
    assert api.call("POST", path, "read_a", json={"data": {"approved": True}}).status_code == 403
    wrong = api.call("POST", path, "op_a", json={"data": {"approved": "yes", "extra": 1}})
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["code"] == "HUMAN_TASK_RESPONSE_INVALID"
    assert {e["path"] for e in wrong.json()["errors"]} >= {"approved"}
    assert api.call("POST", path, "op_a", json={"approved": True}).status_code == 422
    unknown = api.call("POST", "/v1/tasks/nope/complete", "op_a", json={"data": {}})
    assert unknown.status_code == 404
    done = api.call("POST", path, "op_a", json={"data": {"approved": True, "note": "ok"}})
    assert done.status_code == 200, done.text
    assert done.json()["run_id"] == run_id
    finished = api.run_status(run_id, "SUCCEEDED")
    assert finished["run"]["status"] == "SUCCEEDED"
    again = api.call("POST", path, "op_a", json={"data": {"approved": True}})
    assert again.status_code == 409


def test_deadletters_by_tenant(api: ApiDeployment) -> None:
    # Refused at the API, so put on the events topic with a plain producer.
    producer = clients.producer(api.settings)
    broken = {"event_type": "x", "tenant": api.tenant_a, "occurred_at": "not a time"}
    producer.produce(api.settings.topic(EVENTS), json.dumps(broken).encode(), b"k")
    producer.flush(30)

    def dead() -> list[dict[str, Any]]:
        return list(api.call("GET", "/v1/deadletters", "read_a").json())

    letters = wait_for(dead, 90, "the dead letter of tenant A")
    assert letters[0]["tenant"] == api.tenant_a and letters[0]["reason"]
    assert letters[0]["source_topic"] == api.settings.topic(EVENTS)
    assert api.call("GET", "/v1/deadletters", "op_b").json() == []
