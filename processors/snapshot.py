"""A snapshot of the processor's routing state, pure: what the log follower folded from
the runtime and audit topics (open waits, live runs' workflow ids, the resolutions and
completion keys of the de-duplication horizon, the held early events) together with
the offsets it covers. A restart loads it and reads only the tail after those offsets,
so it costs time in proportion to the live state, not to the history.

Encoded as one compressed JSON document cut into chunks that each fit a Kafka record."""

from __future__ import annotations

import gc
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from processors.horizon import HorizonSet
from processors.router_index import OpenWait, RouterIndex
from schemas.audit import AuditRecord

FORMAT = 2
# Well under the topics' max.message.bytes, headers and key included.
CHUNK_BYTES = 900_000
# List items or object members encoded to JSON in one call (see `dumps`).
DUMP_ITEMS = 256


@dataclass
class FollowerState:
    """Everything the follower knows, as of `positions` (topic -> partition -> the
    offset of the next record not folded in)."""

    index: RouterIndex
    completed: HorizonSet
    pending_held: dict[str, AuditRecord] = field(default_factory=dict)
    positions: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Encoded:
    snapshot_id: str
    chunks: list[bytes]
    # What the manifest record says, besides where the chunks are.
    manifest: dict[str, Any]


def _ts(at: datetime) -> str:
    return at.isoformat()


def _at(text: str) -> datetime:
    # fromisoformat is the cheapest way back to an aware datetime (C, no tz lookup).
    return datetime.fromisoformat(text)


def _document(state: FollowerState) -> dict[str, Any]:
    index = state.index
    return {
        "format": FORMAT,
        "waits": [
            [
                w.run_id,
                w.wait_id,
                w.tenant,
                w.event_type,
                w.correlation_key,
                _ts(w.created_at),
                _ts(w.eligible_from),
            ]
            for w in index.waits.values()
        ],
        "workflow_ids": index.workflow_ids,
        "resolved": [
            [tenant, event_id, _ts(at), [list(p) for p in pairs]]
            for (tenant, event_id), at, pairs in index.resolved_by.entries()
        ],
        "completed": [[key, _ts(at)] for key, at in state.completed.entries()],
        "held": {key: audit.model_dump(mode="json") for key, audit in state.pending_held.items()},
        "positions": {
            t: {str(p): o for p, o in parts.items()} for t, parts in state.positions.items()
        },
    }


def dumps(document: dict[str, Any]) -> str:
    """``json.dumps(document, separators=(",", ":"))``, the same text, made in pieces
    of at most DUMP_ITEMS list items or object members: one call for the whole document
    would hold the interpreter lock from start to end (60-70 ms for 5,000 held events
    here, several times that on a loaded machine), and the processor's loop, which
    takes events and sends their signals meanwhile, would wait that long."""
    members = []
    for key, value in document.items():
        members.append(f"{_dump(key)}:{_dump_piecewise(value)}")
    return "{" + ",".join(members) + "}"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _dump_piecewise(value: Any) -> str:
    if isinstance(value, list) and len(value) > DUMP_ITEMS:
        parts = (_dump(value[i : i + DUMP_ITEMS])[1:-1] for i in range(0, len(value), DUMP_ITEMS))
        return "[" + ",".join(parts) + "]"
    if isinstance(value, dict) and len(value) > DUMP_ITEMS:
        items = list(value.items())
        parts = (
            _dump(dict(items[i : i + DUMP_ITEMS]))[1:-1] for i in range(0, len(items), DUMP_ITEMS)
        )
        return "{" + ",".join(parts) + "}"
    return _dump(value)


def encode(state: FollowerState, snapshot_id: str, taken_at: datetime) -> Encoded:
    enabled = gc.isenabled()
    gc.disable()  # as in decode: many objects made at once, none in a cycle
    try:
        document = _document(state)
    finally:
        if enabled:
            gc.enable()
    raw = dumps(document).encode("utf-8")
    packed = zlib.compress(raw, 1)
    chunks = [packed[i : i + CHUNK_BYTES] for i in range(0, len(packed), CHUNK_BYTES)] or [b""]
    manifest = {
        "format": FORMAT,
        "snapshot_id": snapshot_id,
        "taken_at": taken_at.isoformat(),
        "chunks": len(chunks),
        "bytes": len(packed),
        "waits": len(state.index.waits),
        "completed": len(state.completed),
        "held": len(state.pending_held),
        "positions": {
            t: {str(p): o for p, o in parts.items()} for t, parts in state.positions.items()
        },
    }
    return Encoded(snapshot_id, chunks, manifest)


class SnapshotUnreadable(Exception):
    """The chunks do not make a snapshot of this format (the caller falls back)."""


def decode(chunks: Iterable[bytes], horizon: timedelta) -> FollowerState:
    # Hundreds of thousands of long-lived objects at once: the cyclic collector would
    # scan them over and over as they are made (most of the time, measured), and none
    # of them can form a cycle that needs it.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _decode(chunks, horizon)
    finally:
        if enabled:
            gc.enable()


def _decode(chunks: Iterable[bytes], horizon: timedelta) -> FollowerState:
    try:
        document = json.loads(zlib.decompress(b"".join(chunks)))
    except (zlib.error, ValueError) as exc:
        raise SnapshotUnreadable(str(exc)) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SnapshotUnreadable("unknown snapshot format")
    index = RouterIndex(horizon=horizon)
    for run_id, wait_id, tenant, event_type, key, created, eligible_from in document["waits"]:
        wait = OpenWait(run_id, wait_id, tenant, event_type, key, _at(created), _at(eligible_from))
        index.add(wait)
    index.workflow_ids = dict(document["workflow_ids"])
    for tenant, event_id, at, pairs in document["resolved"]:
        index.resolved_by.put((tenant, event_id), [(r, w) for r, w in pairs], _at(at))
    completed = HorizonSet(horizon)
    for key, at in document["completed"]:
        completed.add(key, _at(at))
    held = {key: AuditRecord.model_validate(raw) for key, raw in document["held"].items()}
    positions = {
        t: {int(p): int(o) for p, o in parts.items()} for t, parts in document["positions"].items()
    }
    return FollowerState(index, completed, held, positions)
