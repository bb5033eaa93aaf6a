"""`flowledger replay rebuild|verify|swap|timeline|as-of` and `flowledger audit why`:
the auditor's tools, all working from the log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from flowledger.cli import context
from flowledger.cli.foreground import tune_gc
from flowledger.cli.output import (
    EXIT_CHECK_FAILED,
    JSON_FLAG,
    console,
    err_console,
    print_json,
    refusals,
    table,
)
from flowledger.codes import REPLAY_SWAP_REFUSED, REPLAY_TARGET_IS_LIVE
from flowledger.errors import FlowledgerError, InvalidInput
from flowledger.settings import Settings, redact_url
from projections import db
from projections.replay import cut as cuts
from projections.replay import explain, state, targets
from projections.replay.rebuild import Progress as ProgressFn
from projections.replay.rebuild import rebuild
from projections.replay.verify import compare, refusal_difference, refused, verdict
from workflows.codes import INVALID_REQUEST

app = typer.Typer(help="Rebuild, verify and explain the projection tables from the log.")
INTO = typer.Option(None, "--into", help="Rebuild into this database URL.")
SHADOW = typer.Option(False, "--shadow", help="Rebuild into the shadow beside the live one.")


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[ProgressFn | None]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _target(settings: Settings, into: str | None, shadow: bool) -> str:
    live_url = settings.database_url()
    if into and shadow:
        raise InvalidInput("give --into or --shadow, not both", code=INVALID_REQUEST)
    if into:
        # The live URL as configured, or with the password and TLS joined to it.
        if into in (live_url, settings.database.url):
            raise InvalidInput("--into names the live database", code=REPLAY_TARGET_IS_LIVE)
        return into
    return targets.shadow_url(live_url)


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = db.engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _live_cut(settings: Settings) -> cuts.Cut:
    with _engine(settings.database_url()) as live:
        return cuts.from_checkpoints(settings, live)


def _rebuild_into(settings: Settings, target: Engine, cut: cuts.Cut, show: bool) -> dict[str, Any]:
    # the collector settings of `flowledger projector`: a rebuild folds the same way
    tune_gc()
    with _progress(show, "rebuilding") as progress:
        return rebuild(settings, target, cut, progress=progress, helper_setup=tune_gc).as_dict()


@app.command("rebuild")
def rebuild_cmd(
    ctx: typer.Context, into: str | None = INTO, shadow: bool = SHADOW, as_json: bool = JSON_FLAG
) -> None:
    """Rebuild every table from offset 0 up to the live projector's checkpoints."""
    settings = context.settings(ctx)
    with refusals(as_json):
        url = _target(settings, into, shadow)
        cut = _live_cut(settings)
        with _engine(url) as target:
            stats = _rebuild_into(settings, target, cut, not as_json)
    document = {"target": redact_url(url), "cut": cuts.as_json(cut), **stats}
    if as_json:
        print_json(document)
    else:
        console.print(
            f"rebuilt {stats['events']} events into {document['target']} "
            f"({stats['events_per_s']} events/s)"
        )


@app.command("verify")
def verify_cmd(
    ctx: typer.Context, into: str | None = INTO, shadow: bool = SHADOW, as_json: bool = JSON_FLAG
) -> None:
    """Rebuild at the live cut and compare row by row; exit 1 on any difference."""
    settings = context.settings(ctx)
    with refusals(as_json):
        live_url = settings.database_url()
        url = _target(settings, into, shadow)
        with _engine(live_url) as live, _engine(url) as target:
            cut = cuts.from_checkpoints(settings, live)
            stats = _rebuild_into(settings, target, cut, not as_json)
            differences = compare(live, target)
            refused_live, refused_rebuilt = refused(live), refused(target)
            counted = refusal_difference(refused_live, refused_rebuilt)
            if counted is not None:
                differences.append(counted)
            moved = cuts.from_checkpoints(settings, live) != cut
    identical = not differences and not moved
    said = verdict(identical, moved, refused_live, refused_rebuilt, len(differences))
    record = {
        "identical": identical,
        "cut": cuts.as_json(cut),
        # Printed and kept on disk: without the password the URL may carry.
        "target": redact_url(url),
        "live": redact_url(live_url),
        "verified_at": datetime.now(UTC).isoformat(),
    }
    state.save(settings, record)
    document = {
        **record,
        "verdict": said,
        "refused": {"live": refused_live, "rebuilt": refused_rebuilt},
        "differences": [d.as_dict() for d in differences],
        "live_moved": moved,
        **stats,
    }
    if as_json:
        print_json(document)
    elif identical:
        console.print(
            f"[green]{said}[/]: the rebuild of {stats['events']} events equals the live tables"
        )
    else:
        rows = [[d.table, d.key, d.column, d.live, d.rebuilt] for d in differences[:50]]
        console.print(table("differences", ["table", "key", "column", "live", "rebuilt"], rows))
        if moved:
            console.print("the live projector moved past the cut while verifying; run again")
        console.print(f"[red]{said}[/]")
    if not identical:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command("swap")
def swap_cmd(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Swap without a clean verify."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Make the verified shadow live (stop the projector first)."""
    settings = context.settings(ctx)
    with refusals(as_json):
        live_url = settings.database_url()
        shadow = targets.shadow_url(live_url)
        last = state.load(settings)
        now = cuts.as_json(_live_cut(settings))
        problems = []
        if last is None or last.get("target") != redact_url(shadow):
            problems.append("the shadow was never verified")
        else:
            if not last.get("identical"):
                problems.append("the last verify found differences")
            if last.get("cut") != now:
                problems.append("the live tables moved since the last verify")
        if problems and not force:
            raise FlowledgerError(
                "swap refused: " + "; ".join(problems),
                code=REPLAY_SWAP_REFUSED,
                problems=problems,
            )
        swapped = targets.swap(live_url, shadow)
    document = {"swapped": True, "forced": bool(problems), "overridden": problems, **swapped}
    if as_json:
        print_json(document)
    else:
        if problems:
            console.print("[yellow]--force: swapping despite: " + "; ".join(problems) + "[/]")
        console.print(f"the rebuilt tables are live; the old ones are kept as {swapped['retired']}")


@app.command("timeline")
def timeline_cmd(
    ctx: typer.Context, run_id: str = typer.Argument(...), as_json: bool = JSON_FLAG
) -> None:
    """One run's history from the log, with the audit records that touched it."""
    settings = context.settings(ctx)
    with refusals(as_json):
        document = explain.timeline(settings, run_id)
    if as_json:
        print_json(document)
        return
    rows = [
        [e["seq"], e["type"], e["occurred_at"], f"{e['topic']}[{e['partition']}]@{e['offset']}"]
        for e in document["events"]
    ]
    console.print(table(f"run {run_id}", ["seq", "type", "occurred_at", "record"], rows))
    audit_rows = [
        [
            a["event_type"],
            a["correlation_key"],
            ", ".join(f"{d['kind']}:{d['outcome']}" for d in a["deliveries"]),
            f"{a['topic']}[{a['partition']}]@{a['offset']}",
        ]
        for a in document["audit"]
    ]
    console.print(table("audit", ["event_type", "key", "deliveries", "record"], audit_rows))


@app.command("as-of")
def as_of_cmd(
    ctx: typer.Context,
    time: str | None = typer.Option(None, "--time", help="ISO time (broker timestamps)."),
    offsets: str | None = typer.Option(None, "--offsets", help="topic:partition=offset,..."),
    into: str = typer.Option(..., "--into", help="Database URL to build into."),
    as_json: bool = JSON_FLAG,
) -> None:
    """The tables as they stood at a time or at given offsets."""
    settings = context.settings(ctx)
    with refusals(as_json):
        if (time is None) == (offsets is None):
            raise InvalidInput("give exactly one of --time and --offsets", code=INVALID_REQUEST)
        if into in (settings.database_url(), settings.database.url):
            raise InvalidInput("--into names the live database", code=REPLAY_TARGET_IS_LIVE)
        if time is not None:
            try:
                when = datetime.fromisoformat(time.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidInput(
                    f"--time {time!r} is not an ISO time", code=INVALID_REQUEST
                ) from None
            if when.tzinfo is None:
                raise InvalidInput("--time needs a UTC offset", code=INVALID_REQUEST)
            cut = cuts.from_time(settings, when)
        else:
            cut = cuts.parse_spec(settings, offsets or "")
        with _engine(into) as target:
            stats = _rebuild_into(settings, target, cut, not as_json)
    document = {"target": redact_url(into), "cut": cuts.as_json(cut), **stats}
    if as_json:
        print_json(document)
    else:
        console.print(f"built {document['target']} from {stats['events']} events")


@app.command("router")
def router_cmd(
    ctx: typer.Context,
    start: str = typer.Option(..., "--from", help="ISO time: first broker timestamp."),
    end: str = typer.Option(..., "--to", help="ISO time: end (exclusive)."),
    paths_file: Path | None = typer.Option(None, "--paths", help="Correlation paths JSON file."),
    as_json: bool = JSON_FLAG,
) -> None:
    """Dry-run correlation and routing over a range of the ingress log."""
    from processors.correlation import load_paths
    from projections.replay.router import dry_run

    settings = context.settings(ctx)
    with refusals(as_json):
        window = [_parse_time(start, "--from"), _parse_time(end, "--to")]
        paths = (
            load_paths(None, paths_file)
            if paths_file is not None
            else load_paths(settings.correlation.paths, settings.correlation.paths_file)
        )
        document = dry_run(settings, window[0], window[1], paths)
    if as_json:
        print_json(document)
        return
    rows = [
        [
            o["event_type"],
            o["correlation"]["key"],
            o["audited_key"],
            len(o["would_wake"]),
            len(o["did_wake"]),
            "yes" if o["changed"] else "",
        ]
        for o in document["outcomes"]
    ]
    console.print(
        table(
            f"router dry run: {document['events']} events, "
            f"{document['changed']} routed differently",
            ["event_type", "key now", "key audited", "would wake", "did wake", "changed"],
            rows,
        )
    )


def _parse_time(text: str, flag: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{flag} {text!r} is not an ISO time", code=INVALID_REQUEST) from None
    if value.tzinfo is None:
        raise InvalidInput(f"{flag} needs a UTC offset", code=INVALID_REQUEST)
    return value


def why(
    ctx: typer.Context,
    table_name: str = typer.Argument(..., metavar="TABLE"),
    key: str = typer.Argument(..., help="Primary key values joined by |, or JSON."),
    as_json: bool = JSON_FLAG,
) -> None:
    """The chain of log records behind one projection row."""
    settings = context.settings(ctx)
    with refusals(as_json), _engine(settings.database_url()) as live:
        document = explain.why(settings, live, table_name, key)
    if as_json:
        print_json(document)
        return
    rows = [
        [c["topic"], c["partition"], c["offset"], c["event_id"], c["run_id"], c["seq"], c["type"]]
        for c in document["chain"]
    ]
    console.print(
        table(
            f"{table_name} {key}",
            ["topic", "partition", "offset", "event_id", "run", "seq", "type"],
            rows,
        )
    )
