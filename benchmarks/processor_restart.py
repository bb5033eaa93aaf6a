"""How long a processor instance takes to be ready (routing state restored, caught up
with the runtime topic) after a restart, against the length of the history.

A synthetic runtime history of --history records (closed runs older than the
de-duplication horizon, then --open-waits open waits) is produced in bulk; a first
processor folds it all (the one start that reads the history: no snapshot yet) and
writes a snapshot at its clean stop; then --instances processors start together and
each reports its ready time, what it read (snapshot bytes, records after it), the open
waits it holds and its peak memory. Each processor is its own process.

With several instances the brokers delay a new group's first rebalance as Kafka does by
default (3 s, --rebalance-delay-ms), so instances started together share the partitions
from the first generation; with 0 the first to join takes (and restores) them all and
hands half over.

--restarts restarts are measured one after the other ("restart" shows the last one's
instances). The last line printed is one JSON object.

--routing partitioned measures partitioned routing: each instance restores only the
routing partitions the group gives it (their snapshots and the records of their waits
and audit partitions after them), so its ready time is until it holds partitions and
has caught up with them, and the JSON gives each instance's share of the open waits it
holds and of the records it read. The first start then also relays the history's wait
records onto the waits topic (processors/waits_relay.py), once."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._history import produce
from benchmarks._stack import local_stack
from flowledger.settings import Settings


def _env(settings: Settings, group: str, routing: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env.update(
        {
            "FLOWLEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "FLOWLEDGER_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "FLOWLEDGER_TEMPORAL__ADDRESS": settings.temporal.address,
            "FLOWLEDGER_TEMPORAL__NAMESPACE": settings.temporal.namespace,
            "FLOWLEDGER_TEMPORAL__TASK_QUEUE": settings.temporal.task_queue,
            "FLOWLEDGER_PROCESSOR__GROUP_ID": group,
            "FLOWLEDGER_PROCESSOR__ROUTING": routing,
            "FLOWLEDGER_PROCESSOR__SESSION_TIMEOUT_S": "6",
            "FLOWLEDGER_METRICS__ENABLED": "false",
            "FLOWLEDGER_STACK__STATE_DIR": str(settings.stack.state_dir.resolve()),
        }
    )
    return env


def child(instances: int, barrier: Path) -> None:
    """One processor: until ready and idle (no ingress), then a clean stop.

    With several instances, "ready" is when this one holds no more than its share of
    the partitions (the group has settled) and has caught up with them; what it holds
    and has read is taken then. It then keeps routing until every instance got there,
    so that none leaves the group (handing its partitions over) while another settles.
    """
    from processors.app import Processor

    settings = Settings()
    share = -(-settings.kafka.events_partitions // instances)
    seen: dict[str, Any] = {}

    class Settling(Processor):
        def idle(self) -> bool:
            if instances > 1 and len(self._assigned) > share:
                return False
            if not super().idle():
                return False
            if not seen:
                seen["ready_s"] = time.monotonic() - self._started
                seen["held"] = self.follower.counts()
                seen["records_read"] = self.follower.records_read
                (barrier / uuid.uuid4().hex).touch()
            return len(list(barrier.iterdir())) >= instances

    processor = Settling(settings, threading.Event())
    stats = asyncio.run(processor.run(until_idle=True, timeout=600))
    if not seen:
        raise SystemExit("timed out before the group settled")
    print(
        json.dumps(
            {
                "ready_s": round(seen["ready_s"], 3),
                # Connected, index restored (partitioned: before it holds partitions).
                "started_s": round(stats.ready_seconds, 3),
                "startup": stats.startup,
                # What it held once the group settled, and what it had read by then.
                "held_at_ready": seen["held"],
                "records_read": seen["records_read"],
                "snapshots_written": stats.snapshots,
                # Linux reports kilobytes.
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        ),
        flush=True,
    )


def _instances(settings: Settings, group: str, count: int, routing: str) -> list[dict[str, Any]]:
    barrier = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(count), str(barrier)],
            env=_env(settings, group, routing),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"processor exited with {proc.returncode}")
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    shutil.rmtree(barrier)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=500_000)
    parser.add_argument("--open-waits", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--restarts", type=int, default=3, help="restarts measured")
    parser.add_argument("--routing", choices=["replicated", "partitioned"], default="replicated")
    parser.add_argument(
        "--rebalance-delay-ms",
        type=int,
        default=None,
        help="the brokers' group.initial.rebalance.delay.ms (default: Kafka's own, 3000, "
        "with several instances, so those started together join one generation; else 0)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), Path(args.child[1]))
        return
    delay = args.rebalance_delay_ms
    if delay is None:
        delay = 3000 if args.instances > 1 else 0
    with local_stack(rebalance_delay_ms=delay) as settings:
        group = f"bench-restart-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        produced = produce(settings, args.history, args.open_waits)
        produce_s = time.monotonic() - started
        if not args.json:
            print(f"produced {produced} records in {produce_s:.1f} s", flush=True)
        first = _instances(settings, group, 1, args.routing)[0]
        if not args.json:
            print(f"first start (folds the history): {first}", flush=True)
        rounds = [
            _instances(settings, group, args.instances, args.routing) for _ in range(args.restarts)
        ]
        restarted = rounds[-1]
        held = [r["held_at_ready"]["open_waits"] for r in restarted]
        read = [r["records_read"] for r in restarted]
        state = [r["startup"].get("snapshot_bytes", 0) for r in restarted]
        readies = sorted(max(r["ready_s"] for r in one) for one in rounds)
        result = {
            "history": produced,
            "open_waits": args.open_waits,
            "instances": args.instances,
            "routing": args.routing,
            "rebalance_delay_ms": delay,
            "produce_s": round(produce_s, 1),
            "first_start": first,
            "restart": restarted,
            # Per restart, the slowest instance's ready time; the median of them.
            "ready_s_each": readies,
            "ready_s_median": readies[len(readies) // 2],
            # Of the routing state (the open waits), the share each instance holds.
            "held_share": [round(h / max(1, args.open_waits), 3) for h in held],
            # Of the records read by all instances of the last restart, each one's share,
            # and of the snapshot bytes (the routing state) they read.
            "read_share": [round(r / max(1, sum(read)), 3) for r in read],
            "snapshot_read_share": [round(b / max(1, sum(state)), 3) for b in state],
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
