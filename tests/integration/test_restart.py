"""Restarting one part of a running local stack, as a user does it with the CLI: `up
--detach` after the processor died starts only the processor; Kafka and Temporal,
killed with SIGKILL in the middle of a workload and brought back with `stack restart`,
keep their ports and data, and the processor, worker and projector carry on under them
without being restarted: every run finishes, every event is audited once, and a
rebuild from the log equals the live tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text

from flowledger.settings import Settings
from flowledger.stack import launcher, processes, state
from flowledger.stack.state import ServiceState
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

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

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


def _env(tag: str, state_dir: Path) -> dict[str, str]:
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
    return env


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own (`stack up`), its topics, and one published definition; the
    components are left to the test's `up --detach`."""
    tag = uuid.uuid4().hex[:8]
    state_dir = tmp_path / "state"
    env = _env(tag, state_dir)
    base = Settings(
        kafka={"topic_prefix": env["FLOWLEDGER_KAFKA__TOPIC_PREFIX"]},
        temporal={"task_queue": env["FLOWLEDGER_TEMPORAL__TASK_QUEUE"]},
        processor={"group_id": env["FLOWLEDGER_PROCESSOR__GROUP_ID"]},
        projector={"group_id": env["FLOWLEDGER_PROJECTOR__GROUP_ID"]},
        stack={"state_dir": state_dir, "cache_dir": CACHE},
    )
    handle = Stack(state_dir, env, base, tenant=f"tenant-{tag}")
    try:
        handle.json("stack", "up")
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


def kill_service(stack: Stack, name: str) -> ServiceState:
    # Read from stack.json, not through the CLI: the kill lands while work is in flight.
    recorded = state.load(stack.state_dir.resolve())
    assert recorded is not None
    before = recorded.services[name]
    os.kill(before.pid or 0, signal.SIGKILL)
    wait_for(lambda: not processes.alive(before.pid), 30, f"{name} to die")
    return before


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


def restart_mid_workload(stack: Stack, service: str) -> None:
    """Orders placed; the first runs to wait are paid, and the service is killed with
    those payments (and the other runs' starts) in flight; it comes back with `stack
    restart` and every other run is paid as it starts waiting."""
    up = stack.json("up", "--detach")
    assert sorted(up["started"]) == sorted(COMPONENTS), up["started"]
    pids = {name: up["services"][name]["pid"] for name in COMPONENTS}
    engine = db.engine(stack.settings.database_url())
    orders = Orders.make(stack.tenant, ORDERS)
    payer = Payer(stack, engine, orders, set())
    try:
        send(stack.settings, list(orders.placed.values()))

        def first_paid() -> bool:
            payer.pay(CHUNK - len(payer.answered))
            return len(payer.answered) >= CHUNK

        wait_for(
            first_paid,
            RUNS_TIMEOUT_S,
            f"{CHUNK} runs to wait for their payment",
            stack.diagnostics,
        )
        before = kill_service(stack, service)
        at_kill = statuses(engine, orders)
        if service == "temporal":
            # More payments while Temporal is gone, and it stays gone until the
            # processor retries its signals itself, past the client's quick retries.
            payer.pay()
            wait_for(
                lambda: "failed, retrying" in processes.tail(stack.log("processor"), 200),
                60,
                "the processor to retry its signals",
                stack.diagnostics,
            )
        assert stack.json("stack", "status")["services"][service]["state"] == "down"
        began = time.monotonic()
        restarted = stack.json("stack", "restart", service)
        took = time.monotonic() - began
        after = restarted["services"][service]
        assert restarted["restarted"] == [service]
        assert after["state"] == "up" and after["endpoint"] == before.endpoint
        assert after["pid"] != before.pid
        stack.check_components_alive(pids)

        def all_succeeded() -> bool:
            stack.check_components_alive(pids)
            payer.pay()
            return statuses(engine, orders)["SUCCEEDED"] == ORDERS

        wait_for(
            all_succeeded,
            RUNS_TIMEOUT_S,
            "every run to succeed",
            lambda: (
                f"at kill {at_kill}, now {statuses(engine, orders)}, "
                f"{len(payer.answered)} paid\n{stack.diagnostics()}"
            ),
        )
        assert at_kill["SUCCEEDED"] < ORDERS, f"{service} was killed after the work was done"
        print(f"{service}: runs at the kill {dict(at_kill)}, `stack restart` took {took:.1f}s")

        # The same processes did all of it: nobody restarted them.
        now = stack.services()
        assert {name: now[name]["pid"] for name in COMPONENTS} == pids
        wait_for(
            lambda: processor_lag(stack.settings)["total_lag"] == 0,
            60,
            "the processor to commit every ingress record",
            stack.diagnostics,
        )
        assert projection_lag.wait_caught_up(stack.settings, engine, timeout=60)
        check_once(stack.settings, engine, orders)
    finally:
        engine.dispose()
    verified = stack.json("replay", "verify", "--shadow")
    assert verified["identical"] is True and verified["differences"] == []


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


# -- the tests -------------------------------------------------------------------------


def test_up_after_the_processor_died_starts_only_the_processor(stack: Stack) -> None:
    first = stack.json("up", "--detach")
    assert sorted(first["started"]) == sorted(COMPONENTS)
    before = stack.services()
    os.kill(before["processor"]["pid"], signal.SIGKILL)
    wait_for(lambda: not processes.alive(before["processor"]["pid"]), 30, "the processor to die")

    again = stack.json("up", "--detach")
    assert again["started"] == ["processor"]
    after = stack.services()
    for name in ("kafka", "temporal", "worker", "projector"):
        assert after[name]["pid"] == before[name]["pid"], name
    for name in ("kafka", "temporal", "database"):
        assert after[name]["endpoint"] == before[name]["endpoint"], name
    assert after["processor"]["pid"] != before["processor"]["pid"]
    assert processes.alive(after["processor"]["pid"])

    # The new processor works against the same stack: a run starts and is resumed.
    orders = Orders.make(stack.tenant, 1)
    engine = db.engine(stack.settings.database_url())
    try:
        send(stack.settings, list(orders.placed.values()))
        wait_for(lambda: waiting_orders(engine, orders), 60, "the run to wait", stack.diagnostics)
        send(stack.settings, list(orders.paid.values()))
        wait_for(
            lambda: statuses(engine, orders)["SUCCEEDED"] == 1,
            60,
            "the run to succeed",
            stack.diagnostics,
        )
    finally:
        engine.dispose()

    # One component alone, by name; a wrong name is refused.
    restarted = stack.json("restart", "projector")
    assert restarted["restarted"] == ["projector"]
    assert restarted["services"]["projector"]["pid"] != after["projector"]["pid"]
    assert restarted["services"]["worker"]["pid"] == after["worker"]["pid"]
    assert restarted["services"]["kafka"]["pid"] == after["kafka"]["pid"]
    refused = stack.json("restart", "router", expect=2)
    assert refused["error"]["code"] == "SERVICE_UNKNOWN"
    refused = stack.json("stack", "restart", "zookeeper", expect=2)
    assert refused["error"]["code"] == "STACK_SERVICE_UNKNOWN"


def test_restart_without_a_stack_is_unavailable(tmp_path: Path) -> None:
    empty = tmp_path / "none"
    nothing = Stack(empty, _env(uuid.uuid4().hex[:8], empty), Settings(), tenant="none")
    for args in (("stack", "restart", "kafka"), ("restart", "worker")):
        error = nothing.json(*args, expect=3)["error"]
        assert error["code"] == "STACK_NOT_RUNNING" and error["retryable"] is True, error


def test_kafka_killed_mid_workload_comes_back_on_its_port(stack: Stack) -> None:
    restart_mid_workload(stack, "kafka")


def test_temporal_killed_mid_workload_comes_back_on_its_port(stack: Stack) -> None:
    restart_mid_workload(stack, "temporal")


def test_postgres_keeps_its_port_and_data_across_restarts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    own = Stack(state_dir, _env(uuid.uuid4().hex[:8], state_dir), Settings(), tenant="pg")
    try:
        first = own.json("stack", "up", "--database", "postgres")["services"]["database"]
        engine = create_engine(first["endpoint"])
        with engine.begin() as conn:
            conn.execute(text("create table kept (n int)"))
            conn.execute(text("insert into kept values (7)"))
        engine.dispose()

        restarted = own.json("stack", "restart", "database")
        assert restarted["restarted"] == ["database"]
        second = restarted["services"]["database"]
        assert second["endpoint"] == first["endpoint"] and second["pid"] != first["pid"]

        # Killed outright, it comes back with `stack up`, the others untouched.
        os.kill(second["pid"], signal.SIGKILL)
        wait_for(lambda: not processes.alive(second["pid"]), 30, "PostgreSQL to die")
        again = own.json("stack", "up")
        assert again["started"] == ["database"]
        assert again["services"]["database"]["endpoint"] == first["endpoint"]
        assert again["services"]["kafka"]["pid"] == restarted["services"]["kafka"]["pid"]
        engine = create_engine(first["endpoint"])
        with engine.connect() as conn:
            assert conn.execute(text("select n from kept")).scalar() == 7
        engine.dispose()
    finally:
        own.cli("stack", "down", "--json")
