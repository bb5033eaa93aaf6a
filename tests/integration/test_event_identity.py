"""An event's identity on the real stack: its id is unique only within its tenant, and a
triggered run starts once per event, for good, even after the processor forgot it."""

from __future__ import annotations

import uuid
from typing import Any

from flowledger.settings import Settings
from processors.triggers import trigger_run_id, trigger_workflow_id
from projections import db, queries
from projections.projector import Projector
from tests.integration.runtime_support import worker
from tests.integration.test_processor import (
    audits,
    envelope,
    eventually,
    output_of,
    processing,
    result,
    runtime,
    send,
    start_waiting,
    triggered,
    wait_created,
    waiting,
)
from topics import admin
from workflows.definitions import store


def _project(settings: Settings) -> None:
    projector = Projector(settings)
    try:
        projector.run_until_idle(60)
    finally:
        projector.close()


def _listed(settings: Settings, tenant: str) -> list[dict[str, Any]]:
    engine = db.engine(settings.database_url())
    try:
        with engine.connect() as conn:
            return queries.list_audit(conn, tenant=tenant)
    finally:
        engine.dispose()


async def test_two_tenants_same_event_id_each_audited_routed_listed(settings: Settings) -> None:
    suffix = uuid.uuid4().hex[:6]
    tenants = (f"ta-{suffix}", f"tb-{suffix}")
    shared_id = uuid.uuid4()
    async with worker(settings) as client, processing(settings):
        runs = {
            t: await start_waiting(settings, client, waiting(tenant=t), "shared-key")
            for t in tenants
        }
        await eventually(lambda: wait_created(settings, set(runs.values())), what="waits")
        # One after the other, so the second arrives once the first has resolved its
        # wait: the second tenant's event must not inherit the first one's delivery.
        send(settings, envelope(tenant=tenants[0], key="shared-key", event_id=shared_id))
        assert await result(client, runs[tenants[0]]) == str(shared_id)
        send(settings, envelope(tenant=tenants[1], key="shared-key", event_id=shared_id))
        assert await result(client, runs[tenants[1]]) == str(shared_id)
        found = await eventually(
            lambda: (
                mine
                if len(mine := [a for a in audits(settings) if a["event_id"] == str(shared_id)])
                >= 2
                else None
            ),
            what="both audits",
        )
    by_tenant = {a["tenant"]: a for a in found}
    for tenant in tenants:
        assert [(d["run_id"], d["outcome"]) for d in by_tenant[tenant]["deliveries"]] == [
            (runs[tenant], "delivered")
        ]
    _project(settings)
    for tenant in tenants:
        listed = _listed(settings, tenant)
        assert [(row["tenant"], row["event_id"]) for row in listed] == [(tenant, str(shared_id))]
        assert [d["run_id"] for d in listed[0]["deliveries"]] == [runs[tenant]]


async def test_event_processed_again_after_its_run_closed_starts_no_second_run(
    settings: Settings,
) -> None:
    tenant = f"tr-{uuid.uuid4().hex[:6]}"
    # A horizon of one second: by the restart below the processor has forgotten the
    # first event (one partition per topic, as before the horizon was a time).
    forgetful = settings.model_copy(
        update={
            "processor": settings.processor.model_copy(update={"dedup_horizon_s": 1.0}),
            "kafka": settings.kafka.model_copy(
                update={
                    "topic_prefix": f"{settings.kafka.topic_prefix}one.",
                    "partitions": 1,
                    "events_partitions": 1,
                }
            ),
        }
    )
    admin.ensure(forgetful)
    document = triggered("order.placed", tenant=tenant)
    store.publish(forgetful, document)
    event = envelope(event_type="order.placed", tenant=tenant, payload={"amount": 3})
    wid = trigger_workflow_id(tenant, document["id"], str(event.event_id))
    async with worker(forgetful) as client:
        async with processing(forgetful):
            send(forgetful, event)
            await eventually(
                lambda: any(
                    d["outcome"] == "started"
                    for a in audits(forgetful)
                    if a["event_id"] == str(event.event_id)
                    for d in a["deliveries"]
                ),
                what="triggered start",
            )
            assert await output_of(client, wid) == {"amount": 3, "source": "literal"}
            # More events after it; after the restart, past the horizon, it has
            # forgotten that it ever processed the first one.
            filler = [envelope(event_type="noise", tenant=tenant) for _ in range(700)]
            send(forgetful, *filler)
            last = str(filler[-1].event_id)
            await eventually(
                lambda: any(a["event_id"] == last for a in audits(forgetful)),
                timeout=120,
                what="filler audited",
            )
        async with processing(forgetful):
            # A copy it remembered would be skipped unaudited; a second audit shows the
            # event was processed again, and Temporal alone refused the second start.
            send(forgetful, event)
            copies = await eventually(
                lambda: (
                    mine
                    if len(
                        mine := [
                            a for a in audits(forgetful) if a["event_id"] == str(event.event_id)
                        ]
                    )
                    >= 2
                    else None
                ),
                timeout=90,
                what="second audit",
            )
    assert [d["outcome"] for d in copies[-1]["deliveries"]] == ["duplicate"]
    assert copies[-1]["deliveries"][0]["run_id"] == trigger_run_id(wid)
    started = [
        e
        for e in runtime(forgetful)
        if e["type"] == "RunStarted" and e["data"]["workflow_id"] == wid
    ]
    assert len(started) == 1
