"""Restarting one part of a running local stack, as a user does it with the CLI: `up
--detach` after the processor died starts only the processor; Kafka and Temporal,
killed with SIGKILL in the middle of a workload and brought back with `stack restart`,
keep their ports and data, and the processor, worker and projector carry on under them
without being restarted: every run finishes, every event is audited once, and a
rebuild from the log equals the live tables."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from flowledger.settings import Settings
from flowledger.stack import processes, state
from flowledger.stack.state import ServiceState
from projections import db
from tests.integration.cli_stack import (
    COMPONENTS,
    ORDERS,
    Orders,
    Stack,
    Workload,
    env_for,
    own_stack,
    statuses,
    waiting_orders,
)
from tests.integration.runtime_support import send
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with own_stack(tmp_path) as handle:
        yield handle


def kill_service(stack: Stack, name: str) -> ServiceState:
    # Read from stack.json, not through the CLI: the kill lands while work is in flight.
    recorded = state.load(stack.state_dir.resolve())
    assert recorded is not None
    before = recorded.services[name]
    os.kill(before.pid or 0, signal.SIGKILL)
    wait_for(lambda: not processes.alive(before.pid), 30, f"{name} to die")
    return before


def restart_mid_workload(stack: Stack, service: str) -> None:
    """Orders placed; the first runs to wait are paid, and the service is killed with
    those payments (and the other runs' starts) in flight; it comes back with `stack
    restart` and every other run is paid as it starts waiting."""
    work = Workload.start(stack)
    try:
        before = kill_service(stack, service)
        at_kill = work.statuses()
        if service == "temporal":
            # More payments while Temporal is gone, and it stays gone until the
            # processor retries its signals itself, past the client's quick retries.
            work.payer.pay()
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
        stack.check_components_alive(work.pids)
        # The same processes do all of it: nobody restarts them.
        work.finish()
        assert at_kill["SUCCEEDED"] < ORDERS, f"{service} was killed after the work was done"
        print(f"{service}: runs at the kill {dict(at_kill)}, `stack restart` took {took:.1f}s")
    finally:
        work.engine.dispose()
    verified = stack.json("replay", "verify", "--shadow")
    assert verified["identical"] is True and verified["differences"] == []


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
    nothing = Stack(empty, env_for(uuid.uuid4().hex[:8], empty), Settings(), tenant="none")
    for args in (("stack", "restart", "kafka"), ("restart", "worker")):
        error = nothing.json(*args, expect=3)["error"]
        assert error["code"] == "STACK_NOT_RUNNING" and error["retryable"] is True, error


def test_kafka_killed_mid_workload_comes_back_on_its_port(stack: Stack) -> None:
    restart_mid_workload(stack, "kafka")


def test_temporal_killed_mid_workload_comes_back_on_its_port(stack: Stack) -> None:
    restart_mid_workload(stack, "temporal")


def test_postgres_keeps_its_port_and_data_across_restarts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    own = Stack(state_dir, env_for(uuid.uuid4().hex[:8], state_dir), Settings(), tenant="pg")
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
