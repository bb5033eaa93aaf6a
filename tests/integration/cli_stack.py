"""A stack of a test's own driven through the CLI, as a user does it (`stack up`, `up
--detach`), and the order workload the restart and broker tests run through it: orders
placed start runs that wait for their payment, paid as they start waiting, checked
for one audit, one delivery and one completion each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from flowledger.settings import Settings
from flowledger.stack import launcher, processes, state
from processors.status import lag as processor_lag
from processors.triggers import trigger_run_id, trigger_workflow_id
from projections import db
from projections import lag as projection_lag
from projections import tables as t
from schemas.envelope import EventEnvelope
from tests.integration.runtime_support import keyed_event, send
from tests.stack_fixture import CACHE
from tests.waiting import wait_for
from topics.catalogue import RUNTIME
from topics.reader import read_all
from workflows.definitions import store

REPO = Path(__file__).resolve().parents[2]
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")
COMPONENTS = ("worker", "projector", "processor", "reconciler", "api")
ORDERS = 24
# Payments in flight when the service is killed.
CHUNK = 6
RUNS_TIMEOUT_S = 120.0


# -- one stack of a test, driven through the CLI ---------------------------------------


@dataclass
class Stack:
    state_dir: Path
    env: dict[str, str]
    settings: Settings
    tenant: str

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLOWLEDGER, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, expect: int = 0) -> dict[str, Any]:
        done = self.cli(*args, "--json")
        assert done.returncode == expect, done.stdout + done.stderr + self.diagnostics()
        document = json.loads(done.stdout.strip().splitlines()[-1])
        assert isinstance(document, dict)
        return document

    def services(self) -> dict[str, dict[str, Any]]:
        found = self.json("stack", "status")["services"]
        recorded = json.loads((self.state_dir / "services.json").read_text())["components"]
        for name in COMPONENTS:
            found[name] = {"pid": recorded[name]["pid"]}
        return dict(found)

    def log(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    def diagnostics(self) -> str:
        out = []
        for name in COMPONENTS:
            tail = processes.tail(self.log(name), lines=15)
            out.append(f"--- {name} ---\n{tail}")
        return "\n".join(out)

    def check_components_alive(self, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            if not processes.alive(pid):
                pytest.fail(f"{name} ({pid}) died:\n{self.diagnostics()}", pytrace=False)


def env_for(tag: str, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLEDGER_")}
    env.update(
        {
            "FLOWLEDGER_STACK__STATE_DIR": str(state_dir),
            "FLOWLEDGER_STACK__CACHE_DIR": str(CACHE),
            "FLOWLEDGER_KAFKA__TOPIC_PREFIX": f"r{tag}.",
            "FLOWLEDGER_KAFKA__CLIENT_ID": f"flowledger-restart-{tag}",
            "FLOWLEDGER_TEMPORAL__TASK_QUEUE": f"flowledger-{tag}",
            "FLOWLEDGER_PROCESSOR__GROUP_ID": f"processor-{tag}",
            "FLOWLEDGER_PROJECTOR__GROUP_ID": f"projector-{tag}",
            # A SIGKILLed processor's partitions go to its successor within seconds,
            # not 45 (the broker's group.min.session.timeout.ms is 6 s).
            "FLOWLEDGER_PROCESSOR__SESSION_TIMEOUT_S": "6",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The suite run in partitioned routing runs the stack's processors so too (the
    # test's own Settings read the same variable).
    routing = os.environ.get("FLOWLEDGER_PROCESSOR__ROUTING")
    if routing:
        env["FLOWLEDGER_PROCESSOR__ROUTING"] = routing
    return env


@contextmanager
def own_stack(tmp_path: Path, *up_args: str) -> Iterator[Stack]:
    """A stack of its own (`stack up` with `up_args`), its topics, and one published
    definition; the components are left to the test's `up --detach`."""
    tag = uuid.uuid4().hex[:8]
    state_dir = tmp_path / "state"
    env = env_for(tag, state_dir)
    base = Settings(
        kafka={"topic_prefix": env["FLOWLEDGER_KAFKA__TOPIC_PREFIX"]},
        temporal={"task_queue": env["FLOWLEDGER_TEMPORAL__TASK_QUEUE"]},
        processor={"group_id": env["FLOWLEDGER_PROCESSOR__GROUP_ID"]},
        projector={"group_id": env["FLOWLEDGER_PROJECTOR__GROUP_ID"]},
        stack={"state_dir": state_dir, "cache_dir": CACHE},
    )
    handle = Stack(state_dir, env, base, tenant=f"tenant-{tag}")
    try:
        handle.json("stack", "up", *up_args)
        recorded = state.load(state_dir.resolve())
        assert recorded is not None
        handle.settings = launcher.settings_for(base, recorded)
        ensured = handle.cli("topics", "ensure", "--json")
        assert ensured.returncode == 0, ensured.stdout + ensured.stderr
        # Published before the processor starts, which reads it before any event.
        store.publish(handle.settings, order_definition(handle.tenant))
        yield handle
    finally:
        handle.cli("down", "--json")


# -- the workload ----------------------------------------------------------------------


def order_definition(tenant: str) -> dict[str, Any]:
    """Started by order.placed; waits for the order's payment.captured."""
    return {
        "id": "restart-order",
        "version": 1,
        "tenant": tenant,
        "name": "order waiting for its payment",
        "description": "started by order.placed, waits for payment.captured, returns",
        "payload_schema": {
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}},
        },
        "trigger": {
            "type": "event",
            "event_type": "order.placed",
            "payload_mapping": {"order_id": {"$expr": "event.payload.order_id"}},
        },
        "steps": [
            {
                "id": "wait-payment",
                "type": "event.wait",
                "event_type": "payment.captured",
                "correlation_key": {"$expr": "payload.order_id"},
                "assign": {"vars.paid_by": {"$expr": "event.event_id"}},
            },
            {
                "id": "finish",
                "type": "control.return",
                "output": {"$expr": "{'order_id': payload.order_id, 'paid_by': vars.paid_by}"},
            },
        ],
    }


@dataclass
class Orders:
    tenant: str
    placed: dict[str, EventEnvelope]
    paid: dict[str, EventEnvelope]

    @classmethod
    def make(cls, tenant: str, count: int) -> Orders:
        ids = [f"O-{n:03d}" for n in range(count)]
        return cls(
            tenant,
            {o: keyed_event(tenant, "order.placed", o, "order_id") for o in ids},
            {o: keyed_event(tenant, "payment.captured", o, "order_id") for o in ids},
        )

    def run_id(self, order: str) -> str:
        event_id = str(self.placed[order].event_id)
        return trigger_run_id(trigger_workflow_id(self.tenant, "restart-order", event_id))

    def runs(self) -> dict[str, str]:
        return {self.run_id(o): o for o in self.placed}


def rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    try:
        with db.read_connection(engine) as conn:
            return [dict(row._mapping) for row in conn.execute(select(table))]
    except Exception:  # the projector has not created its tables yet
        return []


def statuses(engine: Engine, orders: Orders) -> Counter[str]:
    mine = orders.runs()
    return Counter(r["status"] for r in rows(engine, t.workflow_runs) if r["run_id"] in mine)


def waiting_orders(engine: Engine, orders: Orders) -> set[str]:
    """The orders whose run waits for its payment now."""
    mine = orders.runs()
    return {
        mine[w["run_id"]]
        for w in rows(engine, t.workflow_run_waits)
        if w["status"] == "OPEN" and w["run_id"] in mine
    }


@dataclass
class Payer:
    """Pays each order once its run waits, never before: an event published before
    its run started waiting is not promised to it (ARCHITECTURE §5), and this test is
    about losing nothing that was promised."""

    stack: Stack
    engine: Engine
    orders: Orders
    answered: set[str]

    def pay(self, limit: int = ORDERS) -> int:
        due = sorted(waiting_orders(self.engine, self.orders) - self.answered)[:limit]
        if due:
            send(self.stack.settings, [self.orders.paid[o] for o in due])
            self.answered.update(due)
        return len(due)


def check_once(settings: Settings, engine: Engine, orders: Orders) -> None:
    """One audit row per event with its one delivery; per run one wait resolved by
    its own payment and one SUCCEEDED completion."""
    runs = orders.runs()
    owner = {str(orders.placed[o].event_id): (run, "start") for run, o in runs.items()}
    owner.update({str(orders.paid[o].event_id): (run, "signal") for run, o in runs.items()})
    audits = [a for a in rows(engine, t.workflow_runtime_events) if a["tenant"] == orders.tenant]
    assert Counter(a["event_id"] for a in audits) == Counter(dict.fromkeys(owner, 1))
    assert all(a["error_code"] is None for a in audits), audits
    found = [d for d in rows(engine, t.workflow_event_deliveries) if d["event_id"] in owner]
    deliveries = Counter((d["event_id"], d["run_id"], d["kind"]) for d in found)
    assert deliveries == Counter({(e, run, kind): 1 for e, (run, kind) in owner.items()})
    # A start retried across an outage may find its run already there; nothing failed.
    outcomes = Counter(d["outcome"] for d in found)
    assert set(outcomes) <= {"started", "already_started", "duplicate", "delivered"}, outcomes

    kinds: dict[str, Counter[str]] = {run: Counter() for run in runs}
    matched: dict[str, set[str]] = {run: set() for run in runs}
    seen: set[str] = set()
    for record in read_all(settings, settings.topic(RUNTIME)):
        event = json.loads(record.value or b"{}")
        if event.get("run_id") not in runs or event["event_id"] in seen:
            continue  # a re-emitted copy carries the same id
        seen.add(event["event_id"])
        kinds[event["run_id"]][event["type"]] += 1
        if event["type"] == "WaitResolved":
            matched[event["run_id"]].add(event["data"]["matched_event_id"])
    for run, order in runs.items():
        assert kinds[run]["WaitResolved"] == 1 and kinds[run]["RunCompleted"] == 1, kinds[run]
        assert matched[run] == {str(orders.paid[order].event_id)}
    finished = {r["run_id"]: r for r in rows(engine, t.workflow_runs) if r["run_id"] in runs}
    for run, order in runs.items():
        paid_by = str(orders.paid[order].event_id)
        assert finished[run]["output"] == {"order_id": order, "paid_by": paid_by}


@dataclass
class Workload:
    """The orders of one test through a stack's components (`up --detach`): placed,
    the first CHUNK paid as their runs wait, the rest paid as they start waiting."""

    stack: Stack
    engine: Engine
    orders: Orders
    payer: Payer
    pids: dict[str, int]

    @classmethod
    def start(cls, stack: Stack) -> Workload:
        up = stack.json("up", "--detach")
        assert sorted(up["started"]) == sorted(COMPONENTS), up["started"]
        pids = {name: up["services"][name]["pid"] for name in COMPONENTS}
        engine = db.engine(stack.settings.database_url())
        orders = Orders.make(stack.tenant, ORDERS)
        work = cls(stack, engine, orders, Payer(stack, engine, orders, set()), pids)
        send(stack.settings, list(orders.placed.values()))

        def first_paid() -> bool:
            work.payer.pay(CHUNK - len(work.payer.answered))
            return len(work.payer.answered) >= CHUNK

        wait_for(first_paid, RUNS_TIMEOUT_S, f"{CHUNK} runs to wait", stack.diagnostics)
        return work

    def statuses(self) -> Counter[str]:
        return statuses(self.engine, self.orders)

    def paying_until(self, done: Callable[[Counter[str]], bool], what: str) -> None:
        """Pay whatever waits until `done` holds of the runs' statuses, the components
        alive all along."""

        def check() -> bool:
            self.stack.check_components_alive(self.pids)
            self.payer.pay()
            return done(self.statuses())

        wait_for(
            check,
            RUNS_TIMEOUT_S,
            what,
            lambda: (
                f"now {self.statuses()}, {len(self.payer.answered)} paid\n"
                + self.stack.diagnostics()
            ),
        )

    def finish(self) -> None:
        """Every run succeeded, by the same component processes, every record committed
        and projected, each event audited and delivered once."""
        self.paying_until(lambda s: s["SUCCEEDED"] == ORDERS, "every run to succeed")
        now = self.stack.services()
        assert {name: now[name]["pid"] for name in COMPONENTS} == self.pids
        wait_for(
            lambda: processor_lag(self.stack.settings)["total_lag"] == 0,
            60,
            "the processor to commit every ingress record",
            self.stack.diagnostics,
        )
        assert projection_lag.wait_caught_up(self.stack.settings, self.engine, timeout=60)
        check_once(self.stack.settings, self.engine, self.orders)
