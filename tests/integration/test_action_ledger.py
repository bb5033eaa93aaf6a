"""The action idempotency ledger on the real stack: an `action.call` with an
`idempotency_key`, run by two runs at once and by a rerun, reaches its HTTP endpoint
once; a worker killed in the middle of the action leaves the key to its lease, and
only then does a retry run the action, to completion, once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from flowledger.settings import Settings
from projections import db
from projections import tables as t
from tests.integration.runtime_support import (
    REPO,
    completed,
    component_env,
    definition,
    of_type,
    projector,
    start,
    stop_process,
    until,
    wait_for_events,
    worker,
)
from workflows import control
from workflows.client import connect
from workflows.messages import run_workflow_id

# Long enough that the retry still finds the lease held on a loaded machine: it comes
# at the heartbeat timeout (10 s after the last beat), plus the sticky queue's 10 s
# timeout (the workflow task first goes to the killed worker's queue), plus the
# replacement worker's start. Measured under load: refused at 19 s after the kill.
LEASE_S = 40.0
# How the activity's ACTION_KEY_BUSY failure reads in Temporal's history (its code
# travels in the encoded details; the message is plain text).
BUSY_TEXT = "is being run by"


@dataclass
class Endpoint:
    """An HTTP endpoint that counts the requests it gets and answers the first one
    only when told to (so a test can hold an action in the middle of its run)."""

    url: str = ""
    arrivals: list[float] = field(default_factory=list)
    answered: int = 0
    release_first: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                state.arrivals.append(time.monotonic())
                first = len(state.arrivals) == 1
            if first:
                state.release_first.wait(120)
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"charged": true}')
            except OSError:
                # The caller (a killed worker) is gone: this request was never answered.
                return
            with state.lock:
                state.answered += 1

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/charge"
    try:
        yield state
    finally:
        state.release_first.set()
        server.shutdown()


def charging(url: str, key_expr: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "charge",
            "type": "action.call",
            "action": "core.http_request",
            "version": 1,
            "input": {"method": "POST", "url": url, "json": {"amount": 5}},
            "idempotency_key": {"$expr": key_expr},
            "save_as": "vars.reply",
        },
        {"id": "r", "type": "control.return", "output": {"$expr": "vars.reply.status"}},
    ]


async def found_key_held(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether an attempt of the run's action was refused because the key was held."""
    history = await handle.fetch_history()
    return any(
        event.HasField("activity_task_failed_event_attributes")
        and BUSY_TEXT in event.activity_task_failed_event_attributes.failure.message
        for event in history.events
    )


def invocations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in of_type(events, "ActionInvocation")]


async def test_two_runs_and_a_rerun_with_one_key_execute_the_action_once(
    settings: Settings,
) -> None:
    key = f"order-{uuid.uuid4().hex[:8]}"
    with endpoint() as http, projector(settings):
        doc = definition(charging(http.url, "payload.order"))
        async with worker(settings) as client:
            first_id, first = await start(settings, client, doc, {"order": key})
            await until(lambda: len(http.arrivals) == 1, what="the first run's request")
            second_id, second = await start(settings, client, doc, {"order": key})
            # The second run finds the key held by the first and waits for it: it is
            # refused with the transient error, and never reaches the endpoint.

            async def second_refused() -> bool:
                return await found_key_held(second)

            await until(second_refused, what="the second run to find the key held")
            assert len(http.arrivals) == 1
            http.release_first.set()
            assert await asyncio.wait_for(first.result(), 60) is not None
            assert await asyncio.wait_for(second.result(), 60) is not None
            rerun = await control.rerun(settings, client, first_id, "charge again?")
            third = client.get_workflow_handle(run_workflow_id(rerun["run_id"]))
            assert await asyncio.wait_for(third.result(), 60) is not None
        assert (len(http.arrivals), http.answered) == (1, 1)

        runs = {first_id: False, second_id: True, rerun["run_id"]: True}
        for run_id, cached in runs.items():
            events = await wait_for_events(settings, run_id)
            assert completed(events)["status"] == "SUCCEEDED"
            [done] = [i for i in invocations(events) if i["status"] == "SUCCEEDED"]
            assert done["cached"] is cached, run_id
            assert done["idempotency_key"] == key
            assert done["output"]["json"] == {"charged": True}

        def projected() -> dict[str, bool] | None:
            engine = db.engine(settings.database_url())
            a = t.workflow_action_invocations
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        a.select().where(a.c.run_id.in_(list(runs)), a.c.status == "SUCCEEDED")
                    ).mappings()
                    found = {row["run_id"]: row["cached"] for row in rows}
            finally:
                engine.dispose()
            return found if len(found) == len(runs) else None

        assert await until(projected, what="the invocations in the table") == runs


def spawn_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = component_env(settings)
    env["FLOWLEDGER_ACTIONS__LEDGER_LEASE_S"] = str(LEASE_S)
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "flowledger"), "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


async def test_a_worker_killed_mid_action_leaves_the_key_until_its_lease_expires(
    settings: Settings, tmp_path: Path
) -> None:
    key = f"order-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    with endpoint() as http:
        doc = definition(charging(http.url, "payload.order"))
        doomed = spawn_worker(settings, log)
        try:
            client: Client = await connect(settings)
            run_id, handle = await start(settings, client, doc, {"order": key})
            await until(
                lambda: len(http.arrivals) == 1 or doomed.poll() is not None,
                timeout=60,
                what="the action to reach the endpoint",
            )
            assert doomed.poll() is None, log.read_text(errors="replace")
            doomed.kill()
            doomed.wait(10)
            killed_at = time.monotonic()
            # The killed worker's request is left hanging; let its handler end.
            http.release_first.set()
        finally:
            stop_process(doomed)
        async with worker(settings) as client:
            assert await asyncio.wait_for(handle.result(), 120) is not None
            # The re-run attempt found the dead worker's lease and waited it out.
            assert await found_key_held(handle)
            second_id, second = await start(settings, client, doc, {"order": key})
            assert await asyncio.wait_for(second.result(), 60) is not None
    # The killed worker's request arrived but its action never finished; the retry's
    # did. (Whether the server's answer to a dead peer "went out" is up to the kernel.)
    assert len(http.arrivals) == 2
    # Not a second concurrent run: the retry came only once the lease could have run
    # out (renewed at most one heartbeat interval before the kill).
    assert http.arrivals[1] - killed_at >= LEASE_S - 3
    events = await wait_for_events(settings, run_id)
    assert completed(events)["status"] == "SUCCEEDED"
    assert [(i["status"], i["cached"]) for i in invocations(events)] == [("SUCCEEDED", False)]
    again = invocations(await wait_for_events(settings, second_id))
    assert [(i["status"], i["cached"]) for i in again] == [("SUCCEEDED", True)]
