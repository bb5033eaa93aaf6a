"""The flowledger demo: a small story on the embedded stack, told through the CLI.

Run by `scripts/demo`. Every step is a real `flowledger` command (printed before it
runs); waiting is on conditions with deadlines, never on fixed sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

ROOT = Path(__file__).resolve().parents[1]
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")
EVENTS = ROOT / "examples" / "events"
DEFINITIONS = ROOT / "examples" / "definitions"
console = Console(width=int(os.environ.get("COLUMNS", "160")))
STARTED = time.monotonic()


def chapter(title: str) -> None:
    console.print(Rule(f"[bold]{title}[/]  [dim]{time.monotonic() - STARTED:5.1f}s[/]"))


def run(*args: str, show: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
    console.print(f"[cyan]$ flowledger {' '.join(args)}[/]")
    done = subprocess.run([FLOWLEDGER, *args], capture_output=True, text=True, check=False)
    if show and done.stdout.strip():
        console.print(done.stdout.rstrip(), highlight=False, markup=False)
    if show and not check and done.returncode != 0:
        console.print(
            f"{done.stderr.rstrip()}\n(exit {done.returncode})",
            style="yellow",
            highlight=False,
            markup=False,
        )
    if check and done.returncode not in (0,):
        console.print(done.stderr.rstrip(), style="red", highlight=False, markup=False)
        raise SystemExit(f"flowledger {' '.join(args)} exited {done.returncode}")
    return done


def query(*args: str) -> Any:
    done = subprocess.run(
        [FLOWLEDGER, *args, "--json"], capture_output=True, text=True, check=False
    )
    try:
        return json.loads(done.stdout)
    except ValueError:
        return None


def temporal_ui() -> str | None:
    status = query("stack", "status") or {}
    ui = status.get("services", {}).get("temporal", {}).get("ui")
    return str(ui) if ui else None


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {what}"):
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"gave up waiting for {what}")
            time.sleep(0.3)
    console.print(f"[green]✓[/] {what}")


def runs_of(definition: str, status: str | None = None) -> list[dict[str, Any]]:
    args = ["runs", "list", "--definition", definition]
    if status:
        args += ["--status", status]
    return query(*args) or []


def with_input(
    definition: str, field: str, value: str, status: str | None = None
) -> list[dict[str, Any]]:
    return [r for r in runs_of(definition, status) if (r.get("input") or {}).get(field) == value]


def caught_up() -> bool:
    return (
        run(
            "projections", "wait", "--until-caught-up", "--timeout", "30", show=False, check=False
        ).returncode
        == 0
    )


def produce_raw(path: Path) -> None:
    """A publisher that skips flowledger's validation, writing straight to the topic."""
    sys.path.insert(0, str(ROOT))
    from flowledger.cli.context import with_stack_endpoints
    from flowledger.settings import Settings
    from topics import clients
    from topics.catalogue import EVENTS as EVENTS_TOPIC

    settings = with_stack_endpoints(Settings())
    producer = clients.producer(settings)
    for line in path.read_text(encoding="utf-8").splitlines():
        producer.produce(settings.topic(EVENTS_TOPIC), key=b"acme:unknown", value=line.encode())
    producer.flush(30)


def redrive_fixed() -> None:
    """Find the dead letter, write its correction (the committed fixed envelope, at the
    dead letter's coordinates), look at the dry run, then send it and watch it run."""
    listed = run("deadletters", "list", "--reason", "RECORD_INVALID", "--json")
    letters = json.loads(listed.stdout or "[]")
    if not letters:
        raise SystemExit("the malformed event was not dead-lettered")
    at = f"{letters[0]['partition']}:{letters[0]['offset']}"
    fixed = json.loads((EVENTS / "malformed-fixed.json").read_text(encoding="utf-8"))
    state = Path(os.environ.get("FLOWLEDGER_STACK__STATE_DIR", ".flowledger"))
    state.mkdir(parents=True, exist_ok=True)
    path = state / "FIXED.ndjson"
    line = {"partition": letters[0]["partition"], "offset": letters[0]["offset"], "value": fixed}
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    console.print(f"the correction, {path}: event_id added, occurred_at given its offset")
    run("deadletters", "redrive", "--offsets", at, "--from-file", str(path))
    run(
        "deadletters",
        "redrive",
        "--offsets",
        at,
        "--from-file",
        str(path),
        "--execute",
        "--by",
        "ops",
    )
    wait_for(
        "order O-1004 (the redriven event) to wait for its payment",
        lambda: bool(with_input("order-fulfilment", "order_id", "O-1004", "WAITING")),
    )


def main() -> None:
    chapter("1. the stack, the processor, the worker and the projector")
    run("up", "--detach")

    chapter("2. publish the workflow definitions")
    for path in sorted(DEFINITIONS.glob("*.json")):
        run("definitions", "publish", str(path))

    chapter("3. orders trigger runs that wait for their payment")
    run("publish", str(EVENTS / "01-orders.ndjson"))
    wait_for(
        "both order runs to wait for their payment",
        lambda: len(runs_of("order-fulfilment", "WAITING")) >= 2,
    )

    chapter("4. a correlated payment resumes its run (and only that one)")
    run("publish", str(EVENTS / "02-payment.ndjson"))
    wait_for(
        "order O-1001 to finish",
        lambda: bool(with_input("order-fulfilment", "order_id", "O-1001", "SUCCEEDED")),
    )

    chapter("5. a payment that arrives before its run even waits for it")
    run("publish", str(EVENTS / "03-order-and-early-payment.ndjson"))
    wait_for(
        "order O-1003 to finish with the early payment",
        lambda: bool(with_input("order-fulfilment", "order_id", "O-1003", "SUCCEEDED")),
    )

    chapter("6. tickets nobody closes in time become human tasks")
    run("publish", str(EVENTS / "04-tickets.ndjson"))
    wait_for(
        "two triage tasks to open",
        lambda: len([t for t in query("tasks", "list") or [] if t.get("status") == "OPEN"]) >= 2,
        timeout=60,
    )
    tasks = [t for t in query("tasks", "list") or [] if t.get("status") == "OPEN"]
    first = next(t for t in tasks if "T-1" in str(t.get("title")))
    console.print("a refused answer first (not in the form's enum), then a valid one:")
    run(
        "tasks",
        "complete",
        first["task_id"],
        "--data",
        '{"decision": "maybe"}',
        "--by",
        "dana",
        check=False,
    )
    run(
        "tasks",
        "complete",
        first["task_id"],
        "--data",
        '{"decision": "close", "note": "duplicate of T-9"}',
        "--by",
        "dana",
    )
    wait_for(
        "ticket T-1 to finish",
        lambda: bool(with_input("ticket-triage", "ticket_id", "T-1", "SUCCEEDED")),
    )

    chapter("7. bad input: a malformed event and an event with no correlation key")
    console.print(f"[cyan]raw producer: {EVENTS / 'malformed.raw'} -> flowledger.events.v1[/]")
    produce_raw(EVENTS / "malformed.raw")
    run("publish", str(EVENTS / "05-no-correlation-key.ndjson"))
    wait_for("the projections to catch up", caught_up)

    chapter("8. an operator fixes the malformed event and redrives it")
    redrive_fixed()

    chapter("9. a nightly schedule on Temporal Schedules, triggered now")
    nightly = "flowledger:schedule:acme:nightly-report:nightly"
    run("schedules", "list")
    run("schedules", "trigger", nightly, "--by", "dana")
    wait_for(
        "the scheduled run to finish",
        lambda: bool(runs_of("nightly-report", "SUCCEEDED")),
    )
    run("schedules", "describe", nightly)

    chapter("what the tables say")
    run("runs", "list")
    run("waits", "list", "--status", "OPEN")
    run("tasks", "list")
    run("audit", "list")
    console.print("[bold]dead letters[/]")
    run("deadletters", "list")
    run("projections", "errors")

    chapter("the auditor's check: rebuild everything from the log and compare")
    run("replay", "verify", "--shadow")

    ui = temporal_ui()
    if ui:
        console.print(
            f"[bold]Temporal UI[/]: {ui}/namespaces/default/workflows"
            " (query e.g. FlowledgerDefinitionId='order-fulfilment'; it goes with `down`)"
        )

    chapter("done")
    run("down")
    console.print(f"[bold green]demo finished in {time.monotonic() - STARTED:.1f}s[/]")


if __name__ == "__main__":
    os.chdir(ROOT)
    # The tables are printed for a wide terminal even when the output is piped.
    os.environ.setdefault("COLUMNS", "160")
    try:
        main()
    except BaseException:
        subprocess.run([FLOWLEDGER, "down"], capture_output=True, check=False)
        raise
