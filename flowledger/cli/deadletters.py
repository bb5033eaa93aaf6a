"""`flowledger deadletters list|show|redrive`: what the processor refused, found by
reason, time or tenant, looked at whole, and sent back to the ingress topic (the
original bytes, or a corrected copy) once, under a loop guard, audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from flowledger.cli import context
from flowledger.cli.operators import Request, audited, by_option, default_operator
from flowledger.cli.output import JSON_FLAG, console, print_json, refusals, table
from flowledger.errors import InvalidInput
from flowledger.settings import Settings
from processors import redrive
from processors.redrive_rules import (
    Decision,
    Filter,
    Fixed,
    Selector,
    decide,
    match_fixed,
    parse_coordinate,
    parse_fixed,
    parse_time,
    select,
)
from topics.catalogue import EVENTS

app = typer.Typer(help="Dead letters: list, show, fix and redrive what the processor refused.")

TIME_HELP = "ISO-8601 (UTC when no offset is given) or an age such as 15m, 2h, 7d."


def _time(text: str | None) -> datetime | None:
    return parse_time(text, datetime.now(UTC)) if text is not None else None


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    reason: str | None = typer.Option(None, "--reason", help="Only this reason code."),
    since: str | None = typer.Option(None, "--since", help=f"Refused at or after. {TIME_HELP}"),
    until: str | None = typer.Option(None, "--until", help=f"Refused at or before. {TIME_HELP}"),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's records."),
    limit: int = typer.Option(0, "--limit", min=0, help="At most this many (0: all)."),
    as_json: bool = JSON_FLAG,
) -> None:
    """List dead letters, oldest first."""
    settings = context.settings(ctx)
    with refusals(as_json):
        chosen = Filter(reason, _time(since), _time(until), tenant, limit or None)
        items = redrive.listing(settings, chosen)
    if as_json:
        print_json(items)
        return
    columns = [
        "partition",
        "offset",
        "reason",
        "error",
        "tenant",
        "source",
        "redrives",
        "redriven",
        "failed_at",
    ]
    rows = [
        [
            i["partition"],
            i["offset"],
            i["reason"],
            i["error"][:80],
            i["tenant"],
            f"{i['source_topic']}[{i['source_partition']}]@{i['source_offset']}",
            i["redrive_count"],
            _redriven(i["redriven"]),
            i["failed_at"],
        ]
        for i in items
    ]
    console.print(table(f"dead letters ({len(items)})", columns, rows))


def _redriven(mark: dict[str, Any] | None) -> str:
    if mark is None:
        return ""
    if mark["state"] == "sent":
        return f"{mark['partition']}:{mark['offset']}"
    return "interrupted (sent again by the next redrive unless it landed)"


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    at: str = typer.Argument(..., metavar="PARTITION:OFFSET", help="The dead letter."),
    as_json: bool = JSON_FLAG,
) -> None:
    """One dead letter: the record, its headers, the reason and the original's place."""
    settings = context.settings(ctx)
    with refusals(as_json):
        letter = redrive.dead_letter(settings, parse_coordinate(at))
        mark = redrive.progress(settings).get(letter.coordinate)
    document = {**letter.detail(), "redriven": mark.as_dict() if mark else None}
    if as_json:
        print_json(document)
        return
    rows = [[k, v] for k, v in document.items() if k != "headers"]
    rows += [[f"header {k}", v] for k, v in document["headers"].items()]
    console.print(table(f"dead letter {at}", ["field", "value"], rows))


def _redrive_human(document: dict[str, Any]) -> None:
    columns = ["dead letter", "reason", "action", "count", "corrected", "sent to"]
    rows = [
        [
            f"{r['partition']}:{r['offset']}",
            r["reason"],
            r["action"] if r["action"] == "send" else f"skip ({r['skipped']})",
            r["redrive_count"],
            "yes" if r["corrected"] else "",
            f"{r['sent_to']['partition']}:{r['sent_to']['offset']}" if r["sent_to"] else "",
        ]
        for r in document["records"]
    ]
    if document["execute"]:
        title = f"redriven: {document['sent']} of {len(rows)}"
    else:
        title = f"would redrive (dry run, nothing sent): {document['would_send']} of {len(rows)}"
    console.print(table(title, columns, rows))
    # Exactly what goes (or went) to the topic, record by record.
    for r in document["records"]:
        if r["action"] != "send":
            continue
        headers = ", ".join(f"{k}={v}" for k, v in r["headers"].items())
        console.print(
            f"{r['partition']}:{r['offset']} -> {r['target_topic']} key={r['key']!r}\n"
            f"  headers: {headers}\n  value: {r['value']}",
            highlight=False,
            markup=False,
        )
    if not document["execute"]:
        console.print("run again with --execute to re-publish these records")


@app.command("redrive")
def redrive_cmd(
    ctx: typer.Context,
    reason: str | None = typer.Option(None, "--reason", help="Every dead letter of this reason."),
    offsets: str | None = typer.Option(
        None, "--offsets", help="These dead letters: PARTITION:OFFSET,..."
    ),
    everything: bool = typer.Option(False, "--all", help="Every dead letter."),
    from_file: Path | None = typer.Option(
        None,
        "--from-file",
        exists=True,
        dir_okay=False,
        help="FIXED.ndjson: corrected records, matched to dead letters by coordinates.",
    ),
    execute: bool = typer.Option(
        False, "--execute", help="Re-publish (without it: a dry run that changes nothing)."
    ),
    by: str | None = by_option(),
    as_json: bool = JSON_FLAG,
) -> None:
    """Send dead letters back to the ingress topic, each at most once; a dry run unless
    --execute."""
    settings = context.settings(ctx)
    ingress = settings.topic(EVENTS)
    redrive_id = str(uuid.uuid4())
    request = Request("redrive", by or default_operator(), details={"redrive_id": redrive_id})
    with refusals(as_json):
        selector = Selector.of(reason, offsets, everything)
        fixed: list[Fixed] = []
        if from_file is not None:
            try:
                text = from_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(
                    f"{from_file} cannot be read: {exc}", field="--from-file"
                ) from exc
            fixed = parse_fixed(text, settings.records)
        request.details.update(
            {"selector": selector.as_dict(), "from_file": str(from_file) if from_file else None}
        )
        document = _redrive(settings, selector, fixed, execute, request, redrive_id, ingress)
    if as_json:
        print_json(document)
    else:
        _redrive_human(document)


def _redrive(
    settings: Settings,
    selector: Selector,
    fixed: list[Fixed],
    execute: bool,
    request: Request,
    redrive_id: str,
    ingress: str,
) -> dict[str, Any]:
    selected = select(redrive.dead_letters(settings), selector)
    corrections = match_fixed(selected, fixed)
    # A dry run only reads: an interrupted redrive's marks are settled, not written.
    marks = redrive.recover(settings, redrive.progress(settings), write=execute)
    decisions = decide(selected, corrections, marks, settings.deadletters.max_redrives)
    sent_to: dict[tuple[int, int], tuple[int, int]] = {}
    if execute and any(d.send for d in decisions):
        with audited(settings, request):
            try:
                for d in redrive.execute(settings, decisions, redrive_id):
                    if d.sent_to is not None:
                        sent_to[d.letter.coordinate] = d.sent_to
            finally:
                request.details.update(_counts(decisions, sent_to))
    records = []
    for d in decisions:
        item = d.as_dict(ingress)
        to = sent_to.get(d.letter.coordinate)
        item["sent_to"] = {"partition": to[0], "offset": to[1]} if to else None
        records.append(item)
    return {
        "execute": execute,
        "redrive_id": redrive_id,
        "selector": selector.as_dict(),
        "target_topic": ingress,
        "max_redrives": settings.deadletters.max_redrives,
        **_counts(decisions, sent_to if execute else {}),
        "would_send": sum(1 for d in decisions if d.send),
        "records": records,
    }


def _counts(
    decisions: list[Decision], sent_to: dict[tuple[int, int], tuple[int, int]]
) -> dict[str, Any]:
    skipped: dict[str, int] = {}
    for d in decisions:
        if d.skip is not None:
            skipped[d.skip] = skipped.get(d.skip, 0) + 1
    return {
        "sent": len(sent_to),
        "skipped": skipped,
        "sent_offsets": [f"{p}:{o}" for p, o in sorted(sent_to)],
    }
