"""Dead letters as operators see them, and what a redrive does with each, decided
without I/O: which dead letters a filter or selector names, which corrected record of a
FIXED.ndjson file belongs to which dead letter (by coordinates), the loop guard, and
the exact record that would be re-published."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from flowledger.errors import InvalidInput
from flowledger.settings import RecordSettings
from processors import deadletter_headers as names
from processors.codes import DEADLETTER_NOT_FOUND
from schemas.bounded_json import RecordRefused, parse_json

Coordinate = tuple[int, int]
RawHeaders = tuple[tuple[str, bytes | None], ...]


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None


def _int(text: str | None, default: int = -1) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: RawHeaders = ()

    def header(self, name: str) -> str | None:
        found = None
        for header, raw in self.headers:
            if header == name:
                found = _text(raw)
        return found

    @property
    def coordinate(self) -> Coordinate:
        return (self.partition, self.offset)

    @property
    def reason(self) -> str:
        return self.header(names.REASON) or ""

    @property
    def redrive_count(self) -> int:
        return max(0, _int(self.header(names.REDRIVE_COUNT), 0))

    @property
    def excerpt(self) -> bool:
        return self.header(names.VALUE) == "excerpt"

    @property
    def failed_at(self) -> datetime:
        text = self.header(names.FAILED_AT)
        if text:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(text)
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def envelope_field(self, name: str) -> str | None:
        """A top-level string of the refused value, when it is a JSON object at all."""
        if self.value is None or self.excerpt:
            return None
        try:
            doc = json.loads(self.value)
        except ValueError:
            return None
        found = doc.get(name) if isinstance(doc, dict) else None
        return found if isinstance(found, str) else None

    def summary(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "error": self.header(names.ERROR) or "",
            "field": self.header(names.FIELD),
            "source_topic": self.header(names.SOURCE_TOPIC),
            "source_partition": _int(self.header(names.SOURCE_PARTITION)),
            "source_offset": _int(self.header(names.SOURCE_OFFSET)),
            "redrive_count": self.redrive_count,
            "redrive_source": self.header(names.REDRIVE_SOURCE),
            "tenant": self.envelope_field("tenant"),
            "event_id": self.envelope_field("event_id"),
            "failed_at": self.failed_at.isoformat(),
            "consumer_group": self.header(names.CONSUMER_GROUP),
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "topic": self.topic,
            "key": _text(self.key),
            "value": _text(self.value),
            "value_is_excerpt": self.excerpt,
            "timestamp": datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC).isoformat(),
            "source_timestamp": self.header(names.SOURCE_TIMESTAMP),
            "headers": {name: _text(raw) for name, raw in self.headers},
        }


# -- choosing dead letters -------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    limit: int | None = None
    # A reader scoped to tenants (an API token) sees only the dead letters whose value
    # names one of them; a record too broken to name a tenant belongs to none.
    tenants: frozenset[str] | None = None


def listed(letters: Iterable[DeadLetter], f: Filter) -> list[DeadLetter]:
    """Oldest first, by the time they were refused."""
    out = []
    for letter in sorted(letters, key=lambda d: (d.failed_at, d.partition, d.offset)):
        if f.reason is not None and letter.reason != f.reason:
            continue
        if f.since is not None and letter.failed_at < f.since:
            continue
        if f.until is not None and letter.failed_at > f.until:
            continue
        if f.tenant is not None and letter.envelope_field("tenant") != f.tenant:
            continue
        if f.tenants is not None and letter.envelope_field("tenant") not in f.tenants:
            continue
        out.append(letter)
    return out[: f.limit] if f.limit else out


def parse_coordinate(text: str, what: str = "PARTITION:OFFSET") -> Coordinate:
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise InvalidInput(f"{text!r} is not {what} (two non-negative integers)", field=what)
    return int(partition), int(offset)


def parse_offsets(text: str) -> list[Coordinate]:
    found = [parse_coordinate(part, "--offsets") for part in text.split(",") if part.strip()]
    if not found:
        raise InvalidInput("--offsets names no dead letter", field="--offsets")
    return found


@dataclass(frozen=True)
class Selector:
    reason: str | None = None
    offsets: tuple[Coordinate, ...] | None = None
    everything: bool = False

    @classmethod
    def of(cls, reason: str | None, offsets: str | None, everything: bool) -> Selector:
        given = [x for x in (reason is not None, offsets is not None, everything) if x]
        if len(given) != 1:
            raise InvalidInput(
                "say which dead letters to redrive: exactly one of --reason, --offsets, --all",
                field="--reason|--offsets|--all",
            )
        return cls(
            reason, tuple(parse_offsets(offsets)) if offsets is not None else None, everything
        )

    def as_dict(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"reason": self.reason}
        if self.offsets is not None:
            return {"offsets": [f"{p}:{o}" for p, o in self.offsets]}
        return {"all": True}


def select(letters: Iterable[DeadLetter], selector: Selector) -> list[DeadLetter]:
    ordered = sorted(letters, key=lambda d: d.coordinate)
    if selector.offsets is not None:
        by = {d.coordinate: d for d in ordered}
        missing = [f"{p}:{o}" for p, o in selector.offsets if (p, o) not in by]
        if missing:
            raise InvalidInput(
                f"no dead letter at {', '.join(missing)}",
                code=DEADLETTER_NOT_FOUND,
                field="--offsets",
                missing=missing,
            )
        return [by[c] for c in dict.fromkeys(selector.offsets)]
    if selector.reason is not None:
        return [d for d in ordered if d.reason == selector.reason]
    return ordered


# -- corrected records -----------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    """One line of FIXED.ndjson: the dead letter it corrects (its own coordinates, or
    its original's) and the value to send instead."""

    line: int
    value: bytes | None
    at: Coordinate | None = None
    source: Coordinate | None = None


def _coordinate_of(doc: dict[str, Any], p: str, o: str) -> Coordinate | None:
    partition, offset = doc.get(p), doc.get(o)
    if isinstance(partition, int) and isinstance(offset, int) and min(partition, offset) >= 0:
        return (partition, offset)
    return None


def parse_fixed(text: str, limits: RecordSettings) -> list[Fixed]:
    """Each non-empty line an object with `partition` and `offset` (the dead letter's,
    as `deadletters list --json` prints them) or `source_partition` and
    `source_offset`, and `value`: the corrected envelope as an object, a string sent as
    it is, or null."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = parse_json(line, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
        except RecordRefused as exc:
            raise InvalidInput(
                f"--from-file line {number}: {exc.message}", field="--from-file", line=number
            ) from exc
        if not isinstance(doc, dict) or "value" not in doc:
            raise InvalidInput(
                f"--from-file line {number}: an object with coordinates and a value is needed",
                field="--from-file",
                line=number,
            )
        at = _coordinate_of(doc, "partition", "offset")
        source = _coordinate_of(doc, "source_partition", "source_offset")
        if at is None and source is None:
            raise InvalidInput(
                f"--from-file line {number}: no partition/offset or source_partition/source_offset",
                field="--from-file",
                line=number,
            )
        raw = doc["value"]
        if isinstance(raw, dict):
            value: bytes | None = json.dumps(raw, separators=(",", ":")).encode()
        elif isinstance(raw, str):
            value = raw.encode()
        elif raw is None:
            value = None
        else:
            raise InvalidInput(
                f"--from-file line {number}: value must be an object, a string or null",
                field="--from-file",
                line=number,
            )
        out.append(Fixed(number, value, at, source))
    return out


def match_fixed(selected: list[DeadLetter], fixed: list[Fixed]) -> dict[Coordinate, Fixed]:
    """Every line belongs to exactly one selected dead letter, and no dead letter gets
    two lines: a mismatch is refused, never guessed."""
    by_at = {d.coordinate: d for d in selected}
    by_source: dict[Coordinate, DeadLetter] = {}
    for d in selected:
        s = d.summary()
        by_source.setdefault((s["source_partition"], s["source_offset"]), d)
    out: dict[Coordinate, Fixed] = {}
    for item in fixed:
        letter = by_at.get(item.at) if item.at is not None else None
        if letter is None and item.source is not None:
            letter = by_source.get(item.source)
        if letter is None:
            raise InvalidInput(
                f"--from-file line {item.line} matches none of the selected dead letters",
                field="--from-file",
                line=item.line,
            )
        if letter.coordinate in out:
            raise InvalidInput(
                f"--from-file lines {out[letter.coordinate].line} and {item.line} both correct "
                f"the dead letter at {letter.partition}:{letter.offset}",
                field="--from-file",
                line=item.line,
            )
        out[letter.coordinate] = item
    return out


# -- the decision ----------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """Progress of one dead letter's redrive: marked before its record is produced
    (`sending`) and once Kafka has it (`sent`, with where it went)."""

    state: Literal["sending", "sent"]
    redrive_id: str
    at_ms: int
    partition: int | None = None
    offset: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "redrive_id": self.redrive_id,
            "at_ms": self.at_ms,
            "partition": self.partition,
            "offset": self.offset,
        }

    @classmethod
    def of(cls, doc: Any) -> Sent | None:
        if not isinstance(doc, dict) or doc.get("state") not in ("sending", "sent"):
            return None
        return cls(
            doc["state"],
            str(doc.get("redrive_id", "")),
            int(doc.get("at_ms", 0)),
            doc.get("partition"),
            doc.get("offset"),
        )


def progress_key(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


Skip = Literal["loop_guard", "already_redriven", "value_is_excerpt"]


@dataclass(frozen=True)
class Decision:
    letter: DeadLetter
    value: bytes | None
    headers: RawHeaders
    redrive_count: int
    corrected: bool
    skip: Skip | None = None
    earlier: Sent | None = None
    sent_to: Coordinate | None = field(default=None, compare=False)

    @property
    def send(self) -> bool:
        return self.skip is None

    def as_dict(self, target_topic: str) -> dict[str, Any]:
        d = self.letter
        return {
            "partition": d.partition,
            "offset": d.offset,
            "reason": d.reason,
            "action": "send" if self.send else "skip",
            "skipped": self.skip,
            "corrected": self.corrected,
            "redrive_count": self.redrive_count,
            "target_topic": target_topic,
            "key": _text(d.key),
            "value": _text(self.value),
            "headers": {name: _text(raw) for name, raw in self.headers},
            "earlier": self.earlier.as_dict() if self.earlier is not None else None,
            "sent_to": (
                {"partition": self.sent_to[0], "offset": self.sent_to[1]}
                if self.sent_to is not None
                else None
            ),
        }


def redriven_headers(letter: DeadLetter, count: int) -> RawHeaders:
    """The original's own headers (its traceparent among them), none of the dead
    letter's, and the redrive's two."""
    kept = tuple((n, raw) for n, raw in letter.headers if not n.startswith("flowledger."))
    return (
        *kept,
        (names.REDRIVE_COUNT, str(count).encode()),
        (names.REDRIVE_SOURCE, f"{letter.topic}:{letter.partition}:{letter.offset}".encode()),
    )


def decide(
    selected: list[DeadLetter],
    fixed: Mapping[Coordinate, Fixed],
    progress: Mapping[Coordinate, Sent],
    max_redrives: int,
) -> list[Decision]:
    """One decision per selected dead letter: a dead letter is sent back at most once
    (its progress says whether it was), never past the loop guard, and an excerpt only
    with a corrected record (the original was over the size limit)."""
    out = []
    for letter in selected:
        count = letter.redrive_count + 1
        correction = fixed.get(letter.coordinate)
        value = correction.value if correction is not None else letter.value
        earlier = progress.get(letter.coordinate)
        skip: Skip | None = None
        if earlier is not None and earlier.state == "sent":
            skip = "already_redriven"
        elif letter.redrive_count >= max_redrives:
            skip = "loop_guard"
        elif correction is None and letter.excerpt:
            skip = "value_is_excerpt"
        out.append(
            Decision(
                letter,
                value,
                redriven_headers(letter, count),
                count,
                correction is not None,
                skip,
                earlier,
            )
        )
    return out


def pending(progress: Mapping[Coordinate, Sent]) -> dict[Coordinate, Sent]:
    """Marked `sending` and never `sent`: an interrupted redrive, whose record may or
    may not be on the ingress topic (the shell looks)."""
    return {c: s for c, s in progress.items() if s.state == "sending"}


def parse_time(text: str, now: datetime) -> datetime:
    """ISO-8601 (a missing offset is UTC), or an age: 30s, 15m, 2h, 7d."""
    value = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return now - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        found = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{text!r} is neither an ISO-8601 time nor an age such as 15m", field="TIME"
        ) from exc
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)
