"""Metrics and health of the processor, worker and projector on the real stack: the
counters move by exactly what a workload of known size did, /readyz follows the group
join, and the provisioned Grafana dashboard asks only for families a scrape shows."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from flowledger.settings import Settings
from processors.app import Processor
from projections.projector import Projector
from tests.integration.runtime_support import (
    definition,
    keyed_event,
    processing,
    record,
    send,
    until,
    worker,
)
from topics import clients
from topics.catalogue import AUDIT, EVENTS, RUNTIME
from topics.reader import read_all
from workflows import control
from workflows.client import connect
from workflows.messages import run_workflow_id
from workflows.worker import WorkerService

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "flowledger.json"
RUNS = 10

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(url: str) -> Samples:
    status, body = get(url)
    assert status == 200, body
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ready(base: str) -> dict[str, Any] | None:
    status, body = get(f"{base}/readyz")
    document: dict[str, Any] = json.loads(body)
    return document if status == 200 else None


def waiting_definition() -> dict[str, Any]:
    return definition(
        [
            {
                "id": "w",
                "type": "event.wait",
                "event_type": "order.paid",
                "correlation_key": {"$expr": "payload.key"},
            },
            {"id": "ret", "type": "control.return", "output": "done"},
        ]
    )


async def start_runs(settings: Settings, client: Client, keys: list[str]) -> list[str]:
    document = waiting_definition()
    runs = []
    for key in keys:
        started = await control.start(settings, client, record(document), {"key": key})
        runs.append(started.run_id)
    return runs


def waits_open(settings: Settings, runs: set[str]) -> bool:
    found = [json.loads(r.value) for r in read_all(settings, settings.topic(RUNTIME))]
    return runs <= {e["run_id"] for e in found if e["type"] == "WaitCreated"}


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported(url: str) -> set[str]:
    """Every series name a scrape declares: a labelled family none of whose label sets
    has happened yet has no sample, but its TYPE line is there for a query to match."""
    status, body = get(url)
    assert status == 200, body
    names: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def dashboard_metrics() -> set[str]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [
        target["expr"]
        for panel in document["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\b(?:flowledger|temporal)_\w+", expr)}


async def test_counters_readiness_and_dashboard(settings: Settings) -> None:
    gate = asyncio.Event()

    async def held_back(own: Settings) -> Client:
        # The processor cannot join its group before this opens: /readyz says so.
        await gate.wait()
        return await connect(own)

    stop = threading.Event()
    processor = Processor(settings, stop, client_factory=held_back)
    service = WorkerService(settings)
    worker_stop = asyncio.Event()
    worker_task = asyncio.create_task(service.run(worker_stop))
    processor_task = asyncio.create_task(processor.run())
    try:
        url = await until(lambda: processor.metrics_url, what="the processor's metrics")
        base = url.removesuffix("/metrics")
        assert url.endswith("/metrics")
        assert get(f"{base}/healthz")[0] == 200
        status, body = get(f"{base}/readyz")
        assert status == 503, body
        assert json.loads(body)["checks"]["partitions_assigned"] is False
        gate.set()
        checks = await until(lambda: ready(base), 60, "the processor ready")
        assert checks["checks"] == {
            "connected": True,
            "caught_up": True,
            "partitions_assigned": True,
            "running": True,
        }

        worker_url = await until(lambda: service.metrics_url, what="the worker's metrics")
        await until(lambda: ready(worker_url.removesuffix("/metrics")), 60, "the worker polling")

        client = await connect(settings)
        keys = [f"order-{n}" for n in range(RUNS)]
        runs = await start_runs(settings, client, keys)
        await until(lambda: waits_open(settings, set(runs)), 60, "the waits")
        p_before, w_before = scrape(url), scrape(worker_url)

        send(settings, [keyed_event("acme", "order.paid", key, "key") for key in keys])
        for run_id in runs:
            await asyncio.wait_for(client.get_workflow_handle(run_workflow_id(run_id)).result(), 60)

        def delivered() -> Samples | None:
            # Signals are counted as Temporal acknowledges them, records once their
            # audit is written too: both have to be there.
            now = scrape(url)
            moved = [
                value(now, name, outcome=outcome) - value(p_before, name, outcome=outcome)
                for name, outcome in (
                    ("flowledger_processor_signals_total", "delivered"),
                    ("flowledger_processor_records_total", "processed"),
                )
            ]
            return now if min(moved) >= RUNS else None

        p_after = await until(delivered, 30, "ten signals counted")
        records = "flowledger_processor_records_total"
        for outcome, moved in {
            "processed": RUNS,
            "duplicate": 0,
            "refused": 0,
            "held": 0,
            "released": 0,
            "expired": 0,
        }.items():
            delta = value(p_after, records, outcome=outcome) - value(
                p_before, records, outcome=outcome
            )
            assert delta == moved, (outcome, delta)
        signals = "flowledger_processor_signals_total"
        assert (
            value(p_after, signals, outcome="delivered")
            - value(p_before, signals, outcome="delivered")
            == RUNS
        )
        wake = "flowledger_processor_wake_latency_seconds_count"
        assert value(p_after, wake) - value(p_before, wake) == RUNS
        assert value(p_after, "flowledger_processor_held_events") == 0
        lags = {
            dict(labels)["partition"]: v
            for (name, labels), v in p_after.items()
            if name == "flowledger_processor_lag_records"
        }
        assert set(lags) == {str(p) for p in range(settings.kafka.events_partitions)}

        runs_done = "flowledger_worker_runs_completed_total"

        def finished() -> Samples | None:
            now = scrape(worker_url)
            moved = value(now, runs_done, status="SUCCEEDED") - value(
                w_before, runs_done, status="SUCCEEDED"
            )
            return now if moved >= RUNS else None

        w_after = await until(finished, 30, "ten runs counted")
        assert (
            value(w_after, runs_done, status="SUCCEEDED")
            - value(w_before, runs_done, status="SUCCEEDED")
            == RUNS
        )
        steps = "flowledger_worker_steps_total"
        for step_type in ("event.wait", "control.return"):
            counted = value(w_after, steps, step_type=step_type, outcome="succeeded") - value(
                w_before, steps, step_type=step_type, outcome="succeeded"
            )
            assert counted == RUNS, (step_type, counted)
        emit = "flowledger_worker_emit_seconds_count"
        assert value(w_after, emit) > value(w_before, emit)
        assert any(name.startswith("temporal_") for name, _ in w_after), "no SDK metrics"

        projector = Projector(settings)
        projector_stop = threading.Event()
        thread = threading.Thread(target=projector.run, args=(projector_stop,), daemon=True)
        thread.start()
        try:
            projector_url = await until(lambda: projector.metrics_url, what="projector metrics")
            projector_base = projector_url.removesuffix("/metrics")
            await until(lambda: ready(projector_base), 60, "the projector caught up")
            j = scrape(projector_url)
            projected = "flowledger_projector_records_total"
            audit, runtime = settings.topic(AUDIT), settings.topic(RUNTIME)
            assert value(j, projected, topic=audit, outcome="applied") == RUNS
            on_runtime = len(read_all(settings, runtime))
            read = sum(
                v
                for (name, labels), v in j.items()
                if name == projected and dict(labels)["topic"] == runtime
            )
            assert read == on_runtime
            assert value(j, "flowledger_projector_errors_total") == 0
            batches = value(j, "flowledger_projector_batch_seconds_count")
            assert batches == projector.stats.batches >= 1
            assert {
                v for (name, _labels), v in j.items() if name == "flowledger_projector_lag_records"
            } == {0}
            names = exported(url) | exported(worker_url) | exported(projector_url)
            missing = sorted(m for m in dashboard_metrics() if m not in names)
            assert not missing, f"the dashboard asks for what no service exports: {missing}"
        finally:
            projector_stop.set()
            await asyncio.to_thread(thread.join, 30)
    finally:
        stop.set()
        gate.set()
        worker_stop.set()
        await processor_task
        await worker_task


async def test_held_released_refused_and_deadlettered_are_counted(settings: Settings) -> None:
    records = "flowledger_processor_records_total"
    async with worker(settings) as client, processing(settings) as processor:
        url = await until(lambda: processor.metrics_url, what="the processor's metrics")
        await until(lambda: ready(url.removesuffix("/metrics")), 60, "the processor ready")
        before = scrape(url)

        # An event before its wait: held, then released when the run's wait opens.
        send(settings, [keyed_event("acme", "order.paid", "early-1", "key")])

        def held() -> Samples | None:
            now = scrape(url)
            return now if value(now, "flowledger_processor_held_events") == 1 else None

        during = await until(held, 30, "one event held")
        assert value(during, records, outcome="held") - value(before, records, outcome="held") == 1
        (run_id,) = await start_runs(settings, client, ["early-1"])
        await asyncio.wait_for(client.get_workflow_handle(run_workflow_id(run_id)).result(), 60)

        # A record that is not JSON: refused and dead-lettered with its reason.
        producer = clients.producer(settings)
        producer.produce(settings.topic(EVENTS), key=b"bad", value=b"{not json")
        assert producer.flush(10) == 0

        def settled() -> Samples | None:
            now = scrape(url)
            released = value(now, records, outcome="released")
            refused = value(now, records, outcome="refused")
            return now if released and refused else None

        after = await until(settled, 30, "the release and the refusal counted")
    moved = {
        outcome: value(after, records, outcome=outcome) - value(before, records, outcome=outcome)
        for outcome in ("processed", "duplicate", "refused", "held", "released", "expired")
    }
    assert moved == {
        "processed": 0,
        "duplicate": 0,
        "refused": 1,
        "held": 1,
        "released": 1,
        "expired": 0,
    }
    assert value(after, "flowledger_processor_held_events") == 0
    dead = "flowledger_processor_deadletters_total"
    assert (
        value(after, dead, reason="RECORD_NOT_JSON") - value(before, dead, reason="RECORD_NOT_JSON")
        == 1
    )
    signals = "flowledger_processor_signals_total"
    assert (
        value(after, signals, outcome="delivered") - value(before, signals, outcome="delivered")
        == 1
    )
