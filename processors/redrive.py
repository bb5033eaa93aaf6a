"""Dead letters read from Kafka, and a redrive carried out (a thin shell over
`redrive_rules`): each record re-published to the ingress topic at most once, with its
progress kept on the compacted flowledger.redrives.v1.

A dead letter is marked `sending` before its record is produced and `sent` (with where
it went) once Kafka acknowledged it. A redrive killed in between leaves `sending`
marks; the next run looks on the ingress topic, from the time of the mark, for a record
carrying that dead letter's `flowledger.redrive.source` header, and sends only those it
does not find. So a killed redrive, started again, sends each record once."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import Producer

from flowledger.errors import InvalidInput, ServiceUnavailable
from flowledger.settings import Settings
from processors.codes import DEADLETTER_NOT_FOUND, REDRIVE_INCOMPLETE
from processors.deadletter_headers import REDRIVE_SOURCE
from processors.redrive_rules import (
    Coordinate,
    DeadLetter,
    Decision,
    Filter,
    Sent,
    listed,
    pending,
    progress_key,
)
from topics import clients, reader
from topics.catalogue import DEADLETTER, EVENTS, REDRIVES
from topics.codes import TOPIC_MISSING
from topics.producing import Outgoing, produce_and_flush

# How far before a `sending` mark a record it covers may carry its timestamp: the
# producer stamps the record after the mark, but clocks of two hosts may differ.
MARK_SKEW_MS = 5_000


def _letter(record: reader.ReadRecord) -> DeadLetter:
    return DeadLetter(
        record.topic,
        record.partition,
        record.offset,
        record.raw_key,
        record.raw_value,
        record.timestamp_ms,
        record.raw_headers,
    )


def dead_letters(settings: Settings, span: reader.ReadRange | None = None) -> list[DeadLetter]:
    return [_letter(r) for r in reader.read(settings, settings.topic(DEADLETTER), span)]


def listing(settings: Settings, chosen: Filter) -> list[dict[str, Any]]:
    """`deadletters list --json` (and `GET /v1/deadletters`): each chosen dead letter's
    summary with where a redrive sent it, if one did."""
    marks = progress(settings)
    out = []
    for letter in listed(dead_letters(settings), chosen):
        mark = marks.get(letter.coordinate)
        out.append({**letter.summary(), "redriven": mark.as_dict() if mark else None})
    return out


def dead_letter(settings: Settings, at: Coordinate) -> DeadLetter:
    partition, offset = at
    found = reader.read(
        settings,
        settings.topic(DEADLETTER),
        reader.ReadRange(partition=partition, offset=offset, max=1),
    )
    if not found or found[0].offset != offset:
        raise InvalidInput(
            f"no dead letter at {partition}:{offset}",
            code=DEADLETTER_NOT_FOUND,
            partition=partition,
            offset=offset,
        )
    return _letter(found[0])


def progress(settings: Settings) -> dict[Coordinate, Sent]:
    """The latest mark of every dead letter a redrive touched (none before the topic
    exists: a deployment whose topics predate redrives has not redriven anything)."""
    out: dict[Coordinate, Sent] = {}
    try:
        records = reader.read(settings, settings.topic(REDRIVES))
    except ServiceUnavailable as exc:
        if exc.code != TOPIC_MISSING:
            raise
        return out
    for record in records:
        partition, _sep, offset = (record.key or "").partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            continue
        try:
            mark = Sent.of(json.loads(record.value)) if record.raw_value is not None else None
        except ValueError:
            continue
        if mark is not None:
            out[(int(partition), int(offset))] = mark
    return out


def _sources(settings: Settings, at: Coordinate) -> str:
    return f"{settings.topic(DEADLETTER)}:{at[0]}:{at[1]}"


def recover(
    settings: Settings, marks: dict[Coordinate, Sent], *, write: bool
) -> dict[Coordinate, Sent]:
    """``marks`` with every interrupted `sending` settled: `sent` where the ingress
    topic has the record (kept so when ``write``), else left for sending again."""
    open_marks = pending(marks)
    if not open_marks:
        return marks
    wanted = {_sources(settings, at): at for at in open_marks}
    since = min(m.at_ms for m in open_marks.values()) - MARK_SKEW_MS
    found: dict[Coordinate, Sent] = {}
    span = reader.ReadRange(from_ms=max(0, since))
    for record in reader.read(settings, settings.topic(EVENTS), span):
        at = wanted.get(record.headers.get(REDRIVE_SOURCE, ""))
        if at is not None and at not in found:
            earlier = open_marks[at]
            found[at] = Sent(
                "sent", earlier.redrive_id, earlier.at_ms, record.partition, record.offset
            )
    if found and write:
        _mark(settings, clients.producer(settings), found)
    return {**marks, **found}


def _mark(settings: Settings, producer: Producer, marks: dict[Coordinate, Sent]) -> None:
    items = [
        Outgoing(
            settings.topic(REDRIVES),
            progress_key(*at).encode(),
            json.dumps(mark.as_dict()).encode(),
        )
        for at, mark in marks.items()
    ]
    done = produce_and_flush(producer, items, settings.kafka.request_timeout_s)
    if done.failed:
        raise ServiceUnavailable(
            f"Kafka did not take the redrive progress: {done.failed[0][1]}",
            code=REDRIVE_INCOMPLETE,
        )


def execute(
    settings: Settings,
    decisions: list[Decision],
    redrive_id: str | None = None,
    on_round: Callable[[list[Decision]], None] | None = None,
) -> list[Decision]:
    """Re-publish every decision that sends, in rounds of `redrive_batch` at no more
    than `redrive_rate_per_s`; the decisions come back with where each record went.
    Raises ServiceUnavailable (REDRIVE_INCOMPLETE) when Kafka does not take a round:
    what was sent is marked, the rest goes the next time."""
    rid = redrive_id or str(uuid.uuid4())
    cfg = settings.deadletters
    timeout = settings.kafka.request_timeout_s
    ingress = settings.topic(EVENTS)
    producer = clients.producer(settings)
    out: list[Decision] = []
    sends = [d for d in decisions if d.send]
    started = time.monotonic()
    for first in range(0, len(sends), cfg.redrive_batch):
        chunk = sends[first : first + cfg.redrive_batch]
        now_ms = int(time.time() * 1000)
        _mark(
            settings,
            producer,
            {d.letter.coordinate: Sent("sending", rid, now_ms) for d in chunk},
        )
        items = {
            id(item): (d, item)
            for d in chunk
            for item in [Outgoing(ingress, d.letter.key, d.value, list(d.headers))]
        }
        done = produce_and_flush(producer, [item for _d, item in items.values()], timeout)
        landed = [
            replace(items[id(ack.item)][0], sent_to=(ack.partition, ack.offset))
            for ack in done.acknowledged
        ]
        if landed:
            _mark(
                settings,
                producer,
                {
                    d.letter.coordinate: Sent("sent", rid, now_ms, to[0], to[1])
                    for d in landed
                    if (to := d.sent_to) is not None
                },
            )
        out.extend(landed)
        if on_round is not None:
            on_round(landed)
        if done.failed:
            raise ServiceUnavailable(
                f"{len(done.failed)} record(s) of the redrive not acknowledged: "
                f"{done.failed[0][1]}; run the same redrive again to send the rest",
                code=REDRIVE_INCOMPLETE,
                sent=len(out),
            )
        if cfg.redrive_rate_per_s:
            # Paced by what was sent so far, not per round, so rounds may be uneven.
            due = started + (first + len(chunk)) / cfg.redrive_rate_per_s
            time.sleep(max(0.0, due - time.monotonic()))
    return out
