"""The per-record decision and trigger mapping, without Kafka or Temporal."""

from __future__ import annotations

import json
import uuid
from collections.abc import Container
from datetime import UTC, datetime, timedelta
from typing import Any

from flowledger.settings import Settings
from processors.correlation import NO_PATHS
from processors.pipeline import IngressRecord, decide, event_completion_key
from processors.router_index import RouterIndex
from processors.triggers import MappingFailed, TriggerIndex, map_input, trigger_run_id
from schemas.definition_record import DefinitionRecord
from schemas.runtime import RUNTIME_EVENT_ADAPTER

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def raw(**fields: Any) -> bytes:
    body = {
        "event_id": str(uuid.uuid4()),
        "event_type": "paid",
        "tenant": "acme",
        "occurred_at": T0.isoformat(),
        **fields,
    }
    return json.dumps(body).encode()


def rec(value: bytes, at: datetime = T0) -> IngressRecord:
    return IngressRecord("events", 0, 3, b"k", value, at)


def plan_of(
    value: bytes,
    index: RouterIndex | None = None,
    triggers: TriggerIndex | None = None,
    completed: Container[str] | None = None,
    now: datetime = T0,
) -> Any:
    return decide(
        rec(value),
        index=index or RouterIndex(),
        triggers=triggers or TriggerIndex(),
        completed=completed or set(),
        paths=NO_PATHS,
        skew=timedelta(seconds=2),
        window=timedelta(minutes=10),
        now=now,
    )


def definition(
    tenant: str = "acme", version: int = 1, event_type: str = "paid"
) -> DefinitionRecord:
    return DefinitionRecord(
        tenant=tenant,
        definition_id="d",
        version=version,
        hash="0" * 64,
        published_at=T0,
        definition={
            "trigger": {
                "type": "event",
                "event_type": event_type,
                "payload_mapping": {"n": {"$expr": "event.payload.n + 1"}, "lit": 7},
            }
        },
    )


def test_refused_record_keeps_no_event_id() -> None:
    plan = plan_of(b'{"event_id": "x", "tenant": "acme", "bogus": 1}')
    assert plan.refused is not None
    assert plan.audit.error_code == "RECORD_INVALID"
    assert plan.audit.event_id is None and plan.audit.tenant == "acme"
    assert plan.completion_key == "at:events:0:3"


def test_missing_key_is_audited_not_held_and_still_triggers() -> None:
    triggers = TriggerIndex()
    triggers.apply(definition())
    plan = plan_of(raw(), triggers=triggers)
    assert plan.audit.error_code == "CORRELATION_MISSING"
    assert not plan.hold and plan.signals == []
    assert len(plan.starts) == 1
    assert plan.starts[0].run_id == trigger_run_id(plan.starts[0].workflow_id)


def test_matching_wait_signals_and_unmatched_is_held() -> None:
    index = RouterIndex()
    index.apply(
        RUNTIME_EVENT_ADAPTER.validate_python(
            {
                "event_id": str(uuid.uuid4()),
                "run_id": "r1",
                "tenant": "acme",
                "seq": 2,
                "occurred_at": T0.isoformat(),
                "type": "WaitCreated",
                "data": {
                    "wait_id": "w1",
                    "wait_type": "event",
                    "step_path": "p",
                    "event_type": "paid",
                    "correlation_key": "k1",
                },
            }
        )
    )
    hit = plan_of(raw(workflow_correlation_key="k1"), index=index)
    assert [(s.run_id, s.workflow_id) for s in hit.signals] == [("r1", "flowledger:run:r1")]
    miss = plan_of(raw(workflow_correlation_key="k2"), index=index)
    assert miss.signals == [] and miss.hold
    old = plan_of(raw(workflow_correlation_key="k2"), index=index, now=T0 + timedelta(hours=1))
    assert not old.hold


def _runtime(tenant: str, run_id: str, seq: int, kind: str, data: dict[str, Any]) -> Any:
    return RUNTIME_EVENT_ADAPTER.validate_python(
        {
            "event_id": str(uuid.uuid4()),
            "run_id": run_id,
            "tenant": tenant,
            "seq": seq,
            "occurred_at": T0.isoformat(),
            "type": kind,
            "data": data,
        }
    )


def test_an_event_id_is_unique_only_within_its_tenant() -> None:
    shared = str(uuid.uuid4())
    index = RouterIndex()
    for tenant, run in (("acme", "ra"), ("beta", "rb")):
        wait = {"wait_id": f"w-{run}", "wait_type": "event", "step_path": "p"}
        index.apply(
            _runtime(
                tenant,
                run,
                2,
                "WaitCreated",
                {**wait, "event_type": "paid", "correlation_key": "k"},
            )
        )
    index.apply(
        _runtime(
            "acme",
            "ra",
            3,
            "WaitResolved",
            {"wait_id": "w-ra", "resolution": "RESOLVED", "matched_event_id": shared},
        )
    )
    # acme's copy redelivered: its delivery is already done and is reported as such.
    again = plan_of(raw(event_id=shared, workflow_correlation_key="k"), index=index)
    assert [d.run_id for d in again.already_delivered] == ["ra"] and again.signals == []
    # beta's event with the same id is its own: routed to beta's run only.
    beta = plan_of(raw(event_id=shared, tenant="beta", workflow_correlation_key="k"), index=index)
    assert beta.already_delivered == []
    assert [s.run_id for s in beta.signals] == ["rb"]
    assert beta.completion_key != again.completion_key


def test_completed_event_is_a_duplicate() -> None:
    value = raw(workflow_correlation_key="k")
    event_id = json.loads(value)["event_id"]
    plan = plan_of(value, completed={event_completion_key("acme", event_id)})
    assert plan.duplicate


def test_latest_version_and_tenant_decide_triggers() -> None:
    triggers = TriggerIndex()
    triggers.apply(definition(version=1))
    triggers.apply(definition(version=2, event_type="other"))
    triggers.apply(definition(tenant="beta"))
    assert triggers.triggered_by("acme", "paid") == []
    assert [r.version for r in triggers.triggered_by("acme", "other")] == [2]
    triggers.apply_tombstone("acme:d:2")
    assert [r.version for r in triggers.triggered_by("acme", "paid")] == [1]


def test_mapping_values_are_expressions_or_literals() -> None:
    out = map_input(definition(), {"payload": {"n": 1}}, Settings(), T0)
    assert out == {"n": 2, "lit": 7}
    bad = definition().model_copy(
        update={
            "definition": {
                "trigger": {
                    "type": "event",
                    "event_type": "paid",
                    "payload_mapping": {"n": {"$expr": "$eval('1')"}},
                }
            }
        }
    )
    try:
        map_input(bad, {"payload": {}}, Settings(), T0)
    except MappingFailed as exc:
        assert exc.code.startswith("EXPR_")
    else:
        raise AssertionError("mapping should fail")


def test_horizon_set_forgets_by_age_not_count() -> None:
    from processors.horizon import HorizonSet

    seen = HorizonSet(timedelta(minutes=10))
    seen.update(["a", "b"], T0)
    seen.add("c", T0 + timedelta(minutes=5))
    seen.add("a", T0 + timedelta(minutes=6))  # seen again, later: kept longer
    assert seen.prune(T0 + timedelta(minutes=10)) == 0
    assert seen.prune(T0 + timedelta(minutes=11)) == 1
    assert "b" not in seen and {"a", "c"} == {k for k, _at in seen.entries()}
    assert seen.prune(T0 + timedelta(minutes=17)) == 2 and len(seen) == 0
    assert seen.forgotten == 3


def test_a_completion_key_past_the_horizon_is_processed_again() -> None:
    from processors.horizon import HorizonSet

    value = raw(workflow_correlation_key="k1")
    event_id = json.loads(value)["event_id"]
    completed = HorizonSet(timedelta(days=1))
    completed.add(event_completion_key("acme", event_id), T0)
    assert plan_of(value, completed=completed).duplicate
    completed.prune(T0 + timedelta(days=2))
    assert not plan_of(value, completed=completed).duplicate


def test_triggers_looked_up_by_tenant_and_event_type_in_id_order() -> None:
    triggers = TriggerIndex()
    for ident in ("b", "a", "c"):
        triggers.apply(definition().model_copy(update={"definition_id": ident}))
    assert [r.definition_id for r in triggers.triggered_by("acme", "paid")] == ["a", "b", "c"]
    triggers.apply_tombstone("acme:b:1")
    assert [r.definition_id for r in triggers.triggered_by("acme", "paid")] == ["a", "c"]
    assert triggers.triggered_by("beta", "paid") == []
