"""Ingress processor throughput and wake-up latency on a local stack.

- route_no_wait_per_s: correlated events matching no wait, through the processor
  (validate, correlate, hold, audit, commit), start-up excluded;
- signals_per_s: events each matching one waiting run, against raw_signals_per_s, a
  bare temporalio signal loop to the same server with the same concurrency;
- wake_p50_ms / wake_p99_ms: from publishing an event to its run's result (the run
  returns right after the wait), one event at a time, the processor running.

The last line printed is one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from benchmarks._stack import local_stack
from flowledger.settings import Settings
from processors.app import Processor
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from topics.catalogue import RUNTIME
from topics.publisher import publish
from topics.reader import read_all
from workflows import control
from workflows.activities import RuntimeActivities
from workflows.definitions.canonical import definition_hash
from workflows.messages import DeliveredEvent, run_workflow_id
from workflows.worker import build_worker, connect

DOCUMENT: dict[str, Any] = {
    "id": "bench-wait",
    "version": 1,
    "tenant": "bench",
    "name": "wait once",
    "description": "",
    "steps": [
        {
            "id": "w",
            "type": "event.wait",
            "event_type": "bench.go",
            "correlation_key": {"$expr": "payload.key"},
        },
        {"id": "ret", "type": "control.return", "output": {"$expr": "payload.key"}},
    ],
}


def _record() -> DefinitionRecord:
    return DefinitionRecord(
        tenant="bench",
        definition_id=DOCUMENT["id"],
        version=1,
        hash=definition_hash(DOCUMENT),
        published_at=datetime.now(UTC),
        definition=DOCUMENT,
    )


def _event(key: str, event_type: str = "bench.go") -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        tenant="bench",
        occurred_at=datetime.now(UTC),
        workflow_correlation_key=key,
    )


def _own(settings: Settings, name: str) -> Settings:
    return settings.model_copy(
        update={"processor": settings.processor.model_copy(update={"group_id": f"bench-{name}"})}
    )


async def _until_idle(settings: Settings) -> tuple[float, Processor]:
    runner = Processor(settings)
    stats = await runner.run(until_idle=True, timeout=600)
    return stats.seconds - stats.ready_seconds, runner


async def _start_waiting(settings: Settings, client: Client, keys: list[str]) -> list[str]:
    gate = asyncio.Semaphore(50)

    async def one(key: str) -> str:
        async with gate:
            started = await control.start(settings, client, _record(), {"key": key})
            return started.run_id

    run_ids = await asyncio.gather(*(one(k) for k in keys))
    wanted = set(run_ids)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events = await asyncio.to_thread(read_all, settings, settings.topic(RUNTIME))
        seen = {json.loads(r.value)["run_id"] for r in events if '"WaitCreated"' in r.value}
        if wanted <= seen:
            break
        await asyncio.sleep(0.5)
    return list(run_ids)


async def _results(client: Client, run_ids: list[str]) -> None:
    await asyncio.gather(
        *(client.get_workflow_handle(run_workflow_id(r)).result() for r in run_ids)
    )


async def measure(settings: Settings, events: int, runs: int, wakes: int) -> dict[str, Any]:
    route = _own(settings, "route")
    await asyncio.to_thread(
        publish, route, [(n, _event(f"nobody-{n}", "bench.noise")) for n in range(events)]
    )
    route_s, _ = await _until_idle(route)

    client = await connect(settings)
    activities = RuntimeActivities(settings)
    async with build_worker(client, settings, activities):
        sig = _own(settings, "signals")
        keys = [f"sig-{n}" for n in range(runs)]
        run_ids = await _start_waiting(sig, client, keys)
        await asyncio.to_thread(publish, sig, [(n, _event(k)) for n, k in enumerate(keys)])
        signals_s, _ = await _until_idle(sig)
        await _results(client, run_ids)

        raw_keys = [f"raw-{n}" for n in range(runs)]
        raw_ids = await _start_waiting(settings, client, raw_keys)
        gate = asyncio.Semaphore(settings.processor.max_in_flight)

        async def raw_signal(run_id: str, key: str) -> None:
            async with gate:
                await client.get_workflow_handle(run_workflow_id(run_id)).signal(
                    "deliver_event",
                    DeliveredEvent(
                        event_id=str(uuid.uuid4()), event_type="bench.go", correlation_key=key
                    ),
                )

        began = time.monotonic()
        await asyncio.gather(*(raw_signal(r, k) for r, k in zip(raw_ids, raw_keys, strict=True)))
        raw_s = time.monotonic() - began
        await _results(client, raw_ids)

        wake = _own(settings, "wake")
        wake_keys = [f"wake-{n}" for n in range(wakes)]
        wake_ids = await _start_waiting(wake, client, wake_keys)
        stop = threading.Event()
        runner = Processor(wake, stop)
        task = asyncio.create_task(runner.run())
        while not runner._assigned:
            await asyncio.sleep(0.05)
        latencies = []
        for run_id, key in zip(wake_ids, wake_keys, strict=True):
            began = time.monotonic()
            await asyncio.to_thread(publish, wake, [(1, _event(key))])
            await client.get_workflow_handle(run_workflow_id(run_id)).result()
            latencies.append((time.monotonic() - began) * 1000)
        stop.set()
        await task
    activities.close()

    latencies.sort()
    signals_rate = runs / signals_s
    raw_rate = runs / raw_s
    return {
        "events": events,
        "runs": runs,
        "wakes": wakes,
        "route_no_wait_per_s": round(events / route_s, 1),
        "signals_per_s": round(signals_rate, 1),
        "raw_signals_per_s": round(raw_rate, 1),
        "signal_ratio": round(signals_rate / raw_rate, 3),
        "wake_p50_ms": round(statistics.median(latencies), 1),
        "wake_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--wakes", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
    args = parser.parse_args()
    with local_stack() as settings:
        figures = asyncio.run(measure(settings, args.events, args.runs, args.wakes))
    if not args.json:
        for name, value in figures.items():
            print(f"{name:>22}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
