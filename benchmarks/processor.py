"""Ingress processor throughput and wake-up latency on a local stack, with the Temporal
worker (`flowledger worker`) and the processor (`flowledger processor`) each in its own
process, as in production; this process only publishes, starts runs and measures.

- route_no_wait_per_s: correlated events matching no wait, through the processor
  (validate, correlate, hold, audit, commit): records over the processor's busy time,
  from its first ingress record to caught up (start-up, group join and shutdown
  excluded);
- signals_per_s: a backlog of events each matching one waiting run, measured the same
  way (the processor's group starting past the earlier phases' records), against
  raw_signals_per_s: the same signals sent by a bare temporalio client loop from this
  process to the same server, with the same concurrency
  (settings.processor.max_in_flight); both averaged over --rounds rounds run in
  alternating order;
- wake_p50_ms / wake_p99_ms: from publishing an event (wall clock just before the
  produce call) to its run resuming: the `occurred_at` of the WaitResolved runtime
  event, which is the workflow time of the workflow task that took the signal. One
  event at a time, the processor already running and caught up with the ingress
  topic (wake_worst_at: which of them were slowest, 1 the first measured). wake_emit_*
  is the same up to the broker timestamp of that WaitResolved record (adds the
  emitting activity), and wake_audit_* up to the event's audit record (the processor's
  part and the signal RPC). bare_wake_* is the same wake-up from a bare signal (no
  Kafka, no processor), interleaved with the others: the floor that Temporal and the
  worker set here.

The last line printed is one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from temporalio.client import Client

from flowledger.settings import Settings
from processors import status
from schemas.definition_record import DefinitionRecord
from schemas.envelope import EventEnvelope
from topics import clients
from topics.catalogue import AUDIT, EVENTS, RUNTIME
from topics.publisher import publish
from topics.serde import encode
from workflows import control
from workflows.client import connect
from workflows.definitions.canonical import definition_hash
from workflows.messages import DeliveredEvent, run_workflow_id

# Run as a script, Python puts benchmarks/ on the path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._stack import local_stack

BIN = Path(sys.executable).parent / "flowledger"

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


def _env(settings: Settings, group: str | None = None) -> dict[str, str]:
    """The child's FLOWLEDGER_* environment: this run's endpoints, prefix, task queue
    and every processor setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    # Unset (None) settings stay unset; secrets are not used by the local stack.
    sections = {
        "KAFKA": settings.kafka.model_dump(mode="json", exclude_none=True),
        "TEMPORAL": settings.temporal.model_dump(mode="json", exclude_none=True),
        "PROCESSOR": settings.processor.model_dump(mode="json", exclude_none=True),
    }
    for section, values in sections.items():
        for name, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"FLOWLEDGER_{section}__{name.upper()}"] = text
    if group is not None:
        env["FLOWLEDGER_PROCESSOR__GROUP_ID"] = group
    env["FLOWLEDGER_STACK__STATE_DIR"] = str(settings.stack.state_dir.resolve())
    env["FLOWLEDGER_DATABASE__URL"] = settings.database_url()
    return env


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _child(
    args: list[str], env: dict[str, str], log: IO[bytes]
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [str(BIN), *args], env=env, stdout=subprocess.PIPE, stderr=log, cwd=Path.cwd()
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class RuntimeTail:
    """Follows the runtime topic (WaitCreated and WaitResolved per run) and the audit
    topic (when each event's audit record landed)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic(RUNTIME)
        self.audit_topic = settings.topic(AUDIT)
        self.consumer = clients.consumer(settings, f"bench-tail-{uuid.uuid4().hex[:8]}")
        assignment = []
        for topic in (self.topic, self.audit_topic):
            meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(assignment)
        self.created: set[str] = set()
        # run_id -> (occurred_at, broker timestamp) of its WaitResolved, epoch seconds.
        self.resolved: dict[str, tuple[float, float]] = {}
        # event_id -> broker timestamp of its (last) audit record, epoch seconds.
        self.audited: dict[str, float] = {}

    def poll(self, timeout: float) -> None:
        for msg in self.consumer.consume(1000, timeout):
            if msg.error():
                continue
            event = json.loads(msg.value() or b"{}")
            if msg.topic() == self.audit_topic:
                self.audited[str(event.get("event_id"))] = msg.timestamp()[1] / 1000
                continue
            if event.get("type") == "WaitCreated":
                self.created.add(event["run_id"])
            elif event.get("type") == "WaitResolved":
                occurred = datetime.fromisoformat(event["occurred_at"]).timestamp()
                self.resolved[event["run_id"]] = (occurred, msg.timestamp()[1] / 1000)

    def until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"benchmark: timed out waiting for {what}")
            self.poll(0.005)

    def close(self) -> None:
        self.consumer.close()


async def _start_waiting(
    settings: Settings, client: Client, tail: RuntimeTail, keys: list[str]
) -> list[str]:
    gate = asyncio.Semaphore(50)

    async def one(key: str) -> str:
        async with gate:
            started = await control.start(settings, client, _record(), {"key": key})
            return started.run_id

    run_ids = list(await asyncio.gather(*(one(k) for k in keys)))
    wanted = set(run_ids)
    await asyncio.to_thread(tail.until, lambda: wanted <= tail.created, 180, "waits")
    return run_ids


def _until_idle(settings: Settings, group: str, log: IO[bytes]) -> dict[str, Any]:
    """`flowledger processor --until-idle --json` in its own process; its stats."""
    with _child(["processor", "--until-idle", "--json"], _env(settings, group), log) as proc:
        cpu = None
        while proc.poll() is None:
            cpu = _cpu_seconds(proc.pid) or cpu
            time.sleep(0.2)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"processor exited with {proc.returncode}: {out[-2000:]}")
    stats: dict[str, Any] = json.loads(out)
    stats["cpu_seconds"] = cpu
    return stats


def _for_group(settings: Settings, group: str) -> Settings:
    return settings.model_copy(
        update={"processor": settings.processor.model_copy(update={"group_id": group})}
    )


def _commit_at_end(settings: Settings, group: str) -> None:
    """The group's committed offsets at the end of every ingress partition."""
    report = status.lag(_for_group(settings, group))
    ends = [
        TopicPartition(report["topic"], r["partition"], r["end_offset"])
        for r in report["partitions"]
    ]
    consumer = clients.consumer(settings, group)
    try:
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _caught_up(settings: Settings, group: str, tail: RuntimeTail, timeout: float = 120) -> None:
    """Until the group's commits reach the end of every ingress partition."""
    group_settings = _for_group(settings, group)
    tail.until(lambda: status.lag(group_settings)["total_lag"] == 0, timeout, "caught up")


def _busy(stats: dict[str, Any]) -> float:
    return float(stats["caught_up_seconds"]) - float(stats["first_record_seconds"])


async def measure(
    settings: Settings, events: int, runs: int, wakes: int, rounds: int, logs: Path
) -> dict[str, Any]:
    log = (logs / "children.log").open("ab")
    extra: dict[str, Any] = {}

    await asyncio.to_thread(
        publish, settings, [(n, _event(f"nobody-{n}", "bench.noise")) for n in range(events)]
    )
    route = await asyncio.to_thread(_until_idle, settings, "bench-route", log)
    route_s = _busy(route)
    extra["route_cpu_s"] = route["cpu_seconds"]

    client = await connect(settings)
    tail = RuntimeTail(settings)
    with _child(["worker"], _env(settings), log):
        # Signals through the processor and from a bare loop, in rounds of alternating
        # order, so neither always runs on the heels of the other's trailing work.
        gate = asyncio.Semaphore(settings.processor.max_in_flight)

        async def through_processor(round_: int) -> float:
            keys = [f"sig{round_}-{n}" for n in range(runs)]
            run_ids = await _start_waiting(settings, client, tail, keys)
            group = f"bench-signals-{round_}"
            # As a running processor would be: past the earlier phases' records, which
            # a new group would read again (all duplicates) inside the measured time.
            await asyncio.to_thread(_commit_at_end, settings, group)
            await asyncio.to_thread(publish, settings, [(n, _event(k)) for n, k in enumerate(keys)])
            sig = await asyncio.to_thread(_until_idle, settings, group, log)
            extra.setdefault("signals_cpu_s", []).append(sig["cpu_seconds"])
            extra.setdefault("signals_batches", []).append(sig["commits"])
            if sig["signals"] != runs:
                raise RuntimeError(f"processor delivered {sig['signals']} signals, not {runs}")
            wanted = set(run_ids)
            await asyncio.to_thread(
                tail.until, lambda: wanted <= set(tail.resolved), 180, "resumes"
            )
            return runs / _busy(sig)

        async def raw_signal(run_id: str, key: str) -> None:
            async with gate:
                await client.get_workflow_handle(run_workflow_id(run_id)).signal(
                    "deliver_event",
                    DeliveredEvent(
                        event_id=str(uuid.uuid4()),
                        event_type="bench.go",
                        correlation_key=key,
                        received_at=datetime.now(UTC).isoformat(),
                    ),
                )

        async def bare(round_: int) -> float:
            keys = [f"raw{round_}-{n}" for n in range(runs)]
            run_ids = await _start_waiting(settings, client, tail, keys)
            began = time.monotonic()
            await asyncio.gather(*(raw_signal(r, k) for r, k in zip(run_ids, keys, strict=True)))
            elapsed = time.monotonic() - began
            wanted = set(run_ids)
            await asyncio.to_thread(
                tail.until, lambda: wanted <= set(tail.resolved), 180, "resumes"
            )
            return runs / elapsed

        processor_rates: list[float] = []
        raw_rates: list[float] = []
        for round_ in range(rounds):
            if round_ % 2 == 0:
                processor_rates.append(await through_processor(round_))
                raw_rates.append(await bare(round_))
            else:
                raw_rates.append(await bare(round_))
                processor_rates.append(await through_processor(round_))
        extra["signals_rounds"] = [round(r, 1) for r in processor_rates]
        extra["raw_rounds"] = [round(r, 1) for r in raw_rates]

        # Wake-up latency, the processor running in its own process.
        wake_keys = [f"wake-{n}" for n in range(wakes + 1)]
        wake_ids = await _start_waiting(settings, client, tail, wake_keys)
        # And, interleaved with them, the same wake-ups by a bare signal (no Kafka, no
        # processor): what Temporal and the worker alone take on this machine.
        bare_keys = [f"bare-{n}" for n in range(wakes)]
        bare_ids = await _start_waiting(settings, client, tail, bare_keys)
        bare_latencies: list[float] = []
        producer = clients.producer(settings)
        topic = settings.topic(EVENTS)
        latencies: list[float] = []
        emitted: list[float] = []
        # Publish to the audit record: the processor's part plus the signal's RPC.
        audited: list[float] = []
        with _child(["processor"], _env(settings, "bench-wake"), log):
            for n, (run_id, key) in enumerate(zip(wake_ids, wake_keys, strict=True)):
                event = _event(key)
                sent = time.time()
                producer.produce(topic, key=event.default_key().encode(), value=encode(event))
                producer.flush(30)
                # The first one also waits out the processor's start and group join.
                await asyncio.to_thread(
                    tail.until, lambda r=run_id: r in tail.resolved, 180 if n == 0 else 30, "wake"
                )
                if n == 0:
                    # The group is new: before its first wake-up it reads the earlier
                    # phases' records again (duplicates all), and a partition still
                    # behind would delay the next event. Measured from caught up.
                    await asyncio.to_thread(_caught_up, settings, "bench-wake", tail)
                    continue
                occurred, broker = tail.resolved[run_id]
                latencies.append((occurred - sent) * 1000)
                emitted.append((broker - sent) * 1000)
                await asyncio.to_thread(
                    tail.until, lambda e=str(event.event_id): e in tail.audited, 30, "audit"
                )
                audited.append((tail.audited[str(event.event_id)] - sent) * 1000)

                bare_id, bare_key = bare_ids[n - 1], bare_keys[n - 1]
                sent = time.time()
                await raw_signal(bare_id, bare_key)
                await asyncio.to_thread(
                    tail.until, lambda r=bare_id: r in tail.resolved, 30, "bare wake"
                )
                bare_latencies.append((tail.resolved[bare_id][0] - sent) * 1000)
        producer.flush(10)
    tail.close()
    log.close()

    # Which wake-ups were the slowest: 1 is the first measured, the one after the event
    # that waited out the processor's start.
    slowest = sorted(range(len(latencies)), key=latencies.__getitem__)[-5:]
    extra["wake_worst_at"] = [n + 1 for n in slowest]
    latencies.sort()
    emitted.sort()
    audited.sort()
    bare_latencies.sort()
    signals_rate = statistics.mean(processor_rates)
    raw_rate = statistics.mean(raw_rates)
    return {
        "events": events,
        "runs": runs,
        "wakes": wakes,
        **extra,
        "bare_wake_p50_ms": round(statistics.median(bare_latencies), 1),
        "bare_wake_p99_ms": round(_p99(bare_latencies), 1),
        "wake_worst_ms": [round(v) for v in latencies[-5:]],
        "bare_wake_worst_ms": [round(v) for v in bare_latencies[-5:]],
        "wake_audit_p50_ms": round(statistics.median(audited), 1),
        "wake_audit_p99_ms": round(_p99(audited), 1),
        "wake_emit_p50_ms": round(statistics.median(emitted), 1),
        "wake_emit_p99_ms": round(_p99(emitted), 1),
        "route_no_wait_per_s": round(events / route_s, 1),
        "signals_per_s": round(signals_rate, 1),
        "raw_signals_per_s": round(raw_rate, 1),
        "signal_ratio": round(signals_rate / raw_rate, 3),
        "wake_p50_ms": round(statistics.median(latencies), 1),
        "wake_p99_ms": round(_p99(latencies), 1),
    }


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--wakes", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=2, help="Signal rounds (processor and bare loop each)."
    )
    parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
    args = parser.parse_args()
    with local_stack() as settings, tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        figures = asyncio.run(
            measure(settings, args.events, args.runs, args.wakes, args.rounds, Path(logs))
        )
    if not args.json:
        for name, value in figures.items():
            print(f"{name:>24}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
