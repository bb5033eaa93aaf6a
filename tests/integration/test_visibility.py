"""Runs found in Temporal's visibility by flowledger's search attributes, with the
`temporal` CLI of the stack, and `flowledger temporal ensure` on the session's dev
server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from flowledger.settings import Settings
from flowledger.stack import temporal as stack_temporal
from tests.integration.runtime_support import component_env, definition, record, start, worker
from tests.waiting import until
from workflows import control
from workflows.messages import DeliveredEvent, run_workflow_id
from workflows.visibility import ATTRIBUTES

FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")


def temporal_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            stack_temporal.binary(settings.stack),
            *args,
            "--address",
            settings.temporal.address,
            "--namespace",
            settings.temporal.namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed(settings: Settings, query: str) -> set[str]:
    done = temporal_cli(settings, "workflow", "list", "--query", query, "--output", "json")
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    if not text:
        return set()
    found = json.loads(text)
    return {str(w["execution"]["workflowId"]) for w in found}


def waiting_on_its_key(tenant: str, definition_id: str) -> dict[str, Any]:
    document = definition(
        [
            {
                "id": "w",
                "type": "event.wait",
                "event_type": "go",
                "correlation_key": {"$expr": "payload.key"},
            }
        ],
        tenant=tenant,
        name=f"visible {definition_id}",
    )
    document["id"] = definition_id
    return document


async def test_runs_are_found_by_tenant_definition_and_waiting_key(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    t1, t2, d1, d2 = f"t1-{tag}", f"t2-{tag}", f"d1-{tag}", f"d2-{tag}"
    async with worker(settings) as client:
        wanted = []
        handles = {}
        for tenant, definition_id, key in (
            (t1, d1, f"k1-{tag}"),
            (t1, d1, f"k2-{tag}"),
            (t1, d2, f"k3-{tag}"),
            (t2, d1, f"k4-{tag}"),
        ):
            run_id, handle = await start(
                settings, client, waiting_on_its_key(tenant, definition_id), {"key": key}
            )
            handles[key] = handle
            if (tenant, definition_id) == (t1, d1):
                wanted.append(run_workflow_id(run_id))

        query = f"FlowledgerTenant='{t1}' AND FlowledgerDefinitionId='{d1}'"
        assert await until(
            lambda: listed(settings, query) == set(wanted), 30, f"exactly {wanted} for {query}"
        )
        assert listed(settings, f"FlowledgerDefinitionVersion=1 AND FlowledgerTenant='{t2}'") == {
            handles[f"k4-{tag}"].id
        }

        # The run waiting on k2 and no other, once its wait has upserted the key.
        waiting = f"FlowledgerCorrelationKeys='k2-{tag}'"
        assert await until(
            lambda: listed(settings, waiting) == {handles[f"k2-{tag}"].id},
            30,
            f"the run waiting on k2 for {waiting}",
        )

        triggered = await control.start(
            settings,
            client,
            record(waiting_on_its_key(t2, d2)),
            {"key": f"k5-{tag}"},
            trigger_event_id=f"ev-{tag}",
        )
        handles[f"k5-{tag}"] = client.get_workflow_handle(triggered.workflow_id)
        assert await until(
            lambda: (
                listed(settings, f"FlowledgerTriggerEventId='ev-{tag}'") == {triggered.workflow_id}
            ),
            30,
            "the run triggered by ev",
        )

        description = await handles[f"k2-{tag}"].describe()
        assert await description.static_summary() == f"visible {d1} (v1) · tenant {t1}"

        # Resolved, the wait's key goes: the run is no longer found by it.
        await handles[f"k2-{tag}"].signal(
            "deliver_event",
            DeliveredEvent(event_id=f"e-{tag}", event_type="go", correlation_key=f"k2-{tag}"),
        )
        await handles[f"k2-{tag}"].result()
        assert await until(lambda: not listed(settings, waiting), 30, "k2 unset after the wait")
        for key, handle in handles.items():
            if key != f"k2-{tag}":
                await handle.terminate("test over")


def ensure(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [FLOWLEDGER, "temporal", "ensure", "--json", *args],
        env=component_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: a["status"] for a in report["attributes"]}


async def fresh_namespace(settings: Settings) -> Settings:
    name = f"ns-{uuid.uuid4().hex[:8]}"
    own = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"namespace": name})}
    )
    done = temporal_cli(own, "operator", "namespace", "create")
    assert done.returncode == 0, done.stderr

    def known() -> bool:
        return temporal_cli(own, "operator", "namespace", "describe").returncode == 0

    assert await until(known, 30, f"namespace {name}")
    return own


async def test_ensure_on_the_stack_finds_everything_registered(settings: Settings) -> None:
    code, report = await asyncio.to_thread(ensure, settings)
    assert code == 0, report
    assert report["ok"] is True
    assert by_name(report) == dict.fromkeys(ATTRIBUTES, "present")


async def test_ensure_registers_what_is_missing_and_reports_a_different_type(
    settings: Settings,
) -> None:
    own = await fresh_namespace(settings)
    made = temporal_cli(
        own,
        "operator",
        "search-attribute",
        "create",
        "--name",
        "FlowledgerTenant",
        "--type",
        "Text",
    )
    assert made.returncode == 0, made.stderr

    code, checked = await asyncio.to_thread(ensure, own, "--check")
    assert code == 1
    assert by_name(checked) == {
        **dict.fromkeys(ATTRIBUTES, "missing"),
        "FlowledgerTenant": "differs",
    }
    tenant = next(a for a in checked["attributes"] if a["name"] == "FlowledgerTenant")
    assert (tenant["type"], tenant["found"]) == ("Keyword", "Text")

    code, report = await asyncio.to_thread(ensure, own)
    assert code == 1, report
    assert by_name(report) == {**dict.fromkeys(ATTRIBUTES, "added"), "FlowledgerTenant": "differs"}

    code, again = await asyncio.to_thread(ensure, own)
    assert code == 1
    assert by_name(again) == {**dict.fromkeys(ATTRIBUTES, "present"), "FlowledgerTenant": "differs"}


async def test_ensure_without_temporal_is_unavailable(settings: Settings) -> None:
    gone = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"address": "127.0.0.1:1"})}
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [FLOWLEDGER, "temporal", "ensure", "--json"],
        env=component_env(gone),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
