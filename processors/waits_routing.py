"""Which partitions of flowledger.internal.waits.v1 a runtime record goes to, pure.

The routing state of partition p is the event waits whose routing key falls in p
(processors/routing_key.py), the workflow ids of runs that cannot be worked out from
the run id, and the closing of those waits. A wait's creation goes to its key's
partition; its resolution, and the end of its run, go where its creation went when the
relay saw that creation, and to every partition when it did not (a relay knows only
what it read since it took the runtime partition: a copy too many is harmless, a close
missing is not). A run's custom workflow id, and a reset (which re-derives every wait
of the run), go everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.routing_key import wait_partition
from schemas.runtime import (
    RunCompleted,
    RunReconciled,
    RunReset,
    RunStarted,
    RuntimeEvent,
    WaitCreated,
    WaitResolved,
)
from workflows.messages import run_workflow_id

# A runtime record naming none of these is neither decoded nor copied (the types its
# JSON would have to hold for the record to matter here).
_TYPES = (
    b'"WaitCreated"',
    b'"WaitResolved"',
    b'"RunStarted"',
    b'"RunCompleted"',
    b'"RunReconciled"',
    b'"RunReset"',
)


def may_matter(value: bytes) -> bool:
    return any(name in value for name in _TYPES)


@dataclass
class _Run:
    # Its workflow id went everywhere, so its end goes everywhere too.
    everywhere: bool = False
    # Its open waits' ids.
    waits: set[str] = field(default_factory=set)


@dataclass
class RelayMemory:
    """What one relay read of one runtime partition since it took it."""

    # wait_id -> the partition its creation went to (None: not an event wait).
    waits: dict[str, int | None] = field(default_factory=dict)
    # Runs whose start was read.
    runs: dict[str, _Run] = field(default_factory=dict)


def targets(event: RuntimeEvent, partitions: int, memory: RelayMemory) -> tuple[list[int], str]:
    """The partitions ``event`` is copied to, and the compaction key of its copies: a
    wait's records share one (its resolution supersedes its creation), a run's own
    records another (its end or its reset supersedes its start; a reset carries the
    start again)."""
    everywhere = list(range(partitions))
    run_id = event.run_id
    if isinstance(event, RunStarted):
        wid = event.data.workflow_id
        custom = bool(wid) and wid != run_workflow_id(run_id)
        memory.runs[run_id] = _Run(everywhere=custom)
        return (everywhere if custom else []), run_id
    if isinstance(event, WaitCreated):
        data = event.data
        key = f"{run_id}:{data.wait_id}"
        if data.wait_type != "event" or not data.event_type or data.correlation_key is None:
            memory.waits[data.wait_id] = None
            return [], key
        p = wait_partition(event.tenant, data.event_type, data.correlation_key, partitions)
        memory.waits[data.wait_id] = p
        run = memory.runs.get(run_id)
        if run is not None:
            run.waits.add(data.wait_id)
        return [p], key
    if isinstance(event, WaitResolved):
        wait_id = event.data.wait_id
        key = f"{run_id}:{wait_id}"
        run = memory.runs.get(run_id)
        if run is not None:
            run.waits.discard(wait_id)
        if wait_id not in memory.waits:
            return everywhere, key
        went = memory.waits.pop(wait_id)
        return ([] if went is None else [went]), key
    if isinstance(event, RunCompleted | RunReconciled):
        run = memory.runs.pop(run_id, None)
        if run is None or run.everywhere:
            for wait_id in run.waits if run is not None else ():
                memory.waits.pop(wait_id, None)
            return everywhere, run_id
        found = {memory.waits.pop(w, None) for w in run.waits}
        return sorted(p for p in found if p is not None), run_id
    if isinstance(event, RunReset):
        # What the reset execution holds is read there; here the run is unknown again.
        run = memory.runs.pop(run_id, None)
        for wait_id in run.waits if run is not None else ():
            memory.waits.pop(wait_id, None)
        return everywhere, run_id
    return [], run_id
