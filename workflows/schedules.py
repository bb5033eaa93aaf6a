"""The Temporal Schedules of published definitions: made to match the definitions
(after a publish, a retire, and by the reconciler at start), and the operator's
pause, unpause, trigger and backfill. Temporal is the authority on every schedule;
each change is recorded as a schedule event (workflows/schedule_events.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from flowledger.errors import FlowledgerError, InvalidInput, ServiceUnavailable
from flowledger.settings import Settings
from schemas.definition_record import DefinitionRecord
from topics.catalogue import DEFINITIONS
from workflows import control, visibility
from workflows.codes import SCHEDULE_NOT_FOUND, SCHEDULE_OPERATION_FAILED
from workflows.messages import WORKFLOW_NAME
from workflows.schedule_events import Snapshot, publish_events, schedule_event
from workflows.schedule_plan import (
    MEMO_FINGERPRINT,
    MEMO_OWNER,
    MEMO_SPEC_FINGERPRINT,
    Report,
    Wanted,
    catch_up,
    once_at,
    schedules_of,
    stale,
    wanted,
)

OVERLAP: Final = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
OVERLAP_NAMES: Final = {policy: name for name, policy in OVERLAP.items()}
MEMO_TENANT = "flowledger.tenant"
MEMO_DEFINITION = "flowledger.definition_id"
MEMO_NAME = "flowledger.name"
MEMO_VERSION = "flowledger.version"
MEMO_SPEC = "flowledger.spec"


def _ms(value: Any) -> timedelta | None:
    return timedelta(milliseconds=int(value)) if value else None


def schedule_spec(trigger: dict[str, Any]) -> tuple[ScheduleSpec, bool]:
    """Temporal's spec of a trigger, and whether it runs once only."""
    jitter = _ms(trigger.get("jitter_ms"))
    zone = trigger.get("timezone") or "UTC"
    if trigger.get("cron"):
        return ScheduleSpec(
            cron_expressions=[trigger["cron"]], time_zone_name=zone, jitter=jitter
        ), False
    if trigger.get("interval_ms"):
        every = timedelta(milliseconds=int(trigger["interval_ms"]))
        return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)], jitter=jitter), False
    at = once_at(trigger)
    once = ScheduleCalendarSpec(
        second=(ScheduleRange(at.second),),
        minute=(ScheduleRange(at.minute),),
        hour=(ScheduleRange(at.hour),),
        day_of_month=(ScheduleRange(at.day),),
        month=(ScheduleRange(at.month),),
        year=(ScheduleRange(at.year),),
        comment=f"once at {at.isoformat()}",
    )
    return ScheduleSpec(calendars=[once], time_zone_name="UTC", jitter=jitter), True


def _schedule(settings: Settings, item: Wanted, state: ScheduleState | None) -> Schedule:
    run = control.run_input_for(settings, item.record, {}, run_id="").model_copy(
        update={
            "workflow_id": None,
            "schedule_id": item.schedule_id,
            "schedule_input": dict(item.trigger.get("input") or {}),
        }
    )
    spec, once = schedule_spec(item.trigger)
    if state is None:
        state = ScheduleState(limited_actions=once, remaining_actions=1 if once else 0)
    action = ScheduleActionStartWorkflow(
        WORKFLOW_NAME,
        args=[run],
        id=item.schedule_id,
        task_queue=settings.temporal.task_queue,
        memo={
            MEMO_FINGERPRINT: _fingerprint(settings, item),
            MEMO_SPEC_FINGERPRINT: item.spec_fingerprint(),
            MEMO_VERSION: item.record.version,
            MEMO_SPEC: item.spec(),
        },
        typed_search_attributes=visibility.start_attributes(run) or TypedSearchAttributes.empty,
        static_summary=visibility.static_summary(run),
    )
    policy = SchedulePolicy(
        overlap=OVERLAP[item.trigger.get("overlap") or "skip"],
        catchup_window=_ms(item.trigger.get("catchup_window_ms")),
    )
    return Schedule(action=action, spec=spec, policy=policy, state=state)


def _fingerprint(settings: Settings, item: Wanted) -> str:
    options = control.run_options(settings).model_dump()
    return item.fingerprint(settings.temporal.task_queue, options)


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


def _failed(what: str, schedule_id: str, exc: BaseException) -> FlowledgerError:
    if _not_found(exc):
        return InvalidInput(
            f"no schedule {schedule_id} in Temporal",
            code=SCHEDULE_NOT_FOUND,
            status=404,
            schedule_id=schedule_id,
        )
    return ServiceUnavailable(
        f"Temporal refused to {what} schedule {schedule_id}: {exc}",
        code=SCHEDULE_OPERATION_FAILED,
        schedule_id=schedule_id,
    )


async def _action_memo(client: Client, desc: ScheduleDescription, key: str) -> Any:
    action = desc.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not action.memo:
        return None
    payload = action.memo.get(key)
    if payload is None:
        return None
    if not hasattr(payload, "data"):
        return payload
    values = await client.data_converter.decode([payload])
    return values[0] if values else None


async def describe_raw(client: Client, schedule_id: str) -> ScheduleDescription:
    try:
        return await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        raise _failed("describe", schedule_id, exc) from exc


async def snapshot(client: Client, desc: ScheduleDescription) -> Snapshot:
    memo = await desc.memo()
    info = desc.info
    return Snapshot(
        schedule_id=desc.id,
        tenant=str(memo.get(MEMO_TENANT, "")),
        definition_id=str(memo.get(MEMO_DEFINITION, "")),
        name=str(memo.get(MEMO_NAME, "")),
        version=await _action_memo(client, desc, MEMO_VERSION),
        spec=await _action_memo(client, desc, MEMO_SPEC) or {},
        overlap=OVERLAP_NAMES.get(desc.schedule.policy.overlap),
        paused=desc.schedule.state.paused,
        note=desc.schedule.state.note,
        next_run_at=min(info.next_action_times, default=None),
        last_run_at=max((a.scheduled_at for a in info.recent_actions), default=None),
        runs=info.num_actions,
        running=[
            getattr(r, "workflow_id", "") for r in info.running_actions if hasattr(r, "workflow_id")
        ],
        owner=memo.get(MEMO_OWNER),
    )


async def upsert(settings: Settings, client: Client, item: Wanted) -> str:
    """Create the schedule or bring it up to date: "created", "updated" or "unchanged"."""
    handle = client.get_schedule_handle(item.schedule_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if not _not_found(exc):
            raise _failed("describe", item.schedule_id, exc) from exc
        try:
            await client.create_schedule(
                item.schedule_id,
                _schedule(settings, item, None),
                memo={
                    MEMO_OWNER: settings.topic(DEFINITIONS),
                    MEMO_TENANT: item.record.tenant,
                    MEMO_DEFINITION: item.record.definition_id,
                    MEMO_NAME: item.name,
                },
            )
        except ScheduleAlreadyRunningError:
            # Created meanwhile by another publish or reconciler: bring it up to date.
            return await upsert(settings, client, item)
        except RPCError as exc:
            raise _failed("create", item.schedule_id, exc) from exc
        return "created"
    if await _action_memo(client, desc, MEMO_FINGERPRINT) == _fingerprint(settings, item):
        return "unchanged"
    same_timing = await _action_memo(client, desc, MEMO_SPEC_FINGERPRINT) == (
        item.spec_fingerprint()
    )

    def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
        old = current.description.schedule.state
        # An operator's pause outlives a new version; a one-time schedule that already
        # ran stays spent unless its time changed.
        state = (
            old
            if same_timing
            else ScheduleState(
                note=old.note,
                paused=old.paused,
                limited_actions=bool(item.trigger.get("at")),
                remaining_actions=1 if item.trigger.get("at") else 0,
            )
        )
        return ScheduleUpdate(schedule=_schedule(settings, item, state))

    try:
        await handle.update(replace)
    except RPCError as exc:
        raise _failed("update", item.schedule_id, exc) from exc
    return "updated"


async def delete(client: Client, schedule_id: str) -> bool:
    """False when Temporal had no such schedule."""
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as exc:
        if _not_found(exc):
            return False
        raise _failed("delete", schedule_id, exc) from exc
    return True


async def owned(settings: Settings, client: Client) -> dict[str, dict[str, Any]]:
    """This deployment's schedules in Temporal (by the owner in their memo), with
    their memo. Temporal's list is eventually consistent: a schedule made or deleted a
    moment ago may be missing or still there."""
    topic = settings.topic(DEFINITIONS)
    out: dict[str, dict[str, Any]] = {}
    try:
        async for entry in await client.list_schedules():
            memo = dict(await entry.memo())
            if memo.get(MEMO_OWNER) == topic:
                out[entry.id] = memo
    except RPCError as exc:
        raise ServiceUnavailable(
            f"Temporal refused to list schedules: {exc}", code=SCHEDULE_OPERATION_FAILED
        ) from exc
    return out


async def _catch_up(
    client: Client, item: Wanted, desc: ScheduleDescription, since: datetime | None
) -> dict[str, Any] | None:
    """Start a one-time schedule whose time passed while it was being created or
    moved (schedule_plan.catch_up), under its overlap policy; the window, or None."""
    window = catch_up(
        item.trigger,
        since,
        paused=desc.schedule.state.paused,
        remaining_actions=desc.schedule.state.remaining_actions,
        next_action_times=desc.info.next_action_times,
        taken=[a.scheduled_at for a in desc.info.recent_actions],
    )
    if window is None:
        return None
    try:
        await client.get_schedule_handle(item.schedule_id).backfill(
            ScheduleBackfill(start_at=window[0], end_at=window[1])
        )
    except RPCError as exc:
        raise _failed("backfill", item.schedule_id, exc) from exc
    return {"caught_up": {"from": window[0].isoformat(), "to": window[1].isoformat()}}


async def _apply(
    settings: Settings,
    client: Client,
    wanted_items: Iterable[Wanted],
    remove: Iterable[str],
    requested_by: str,
    catch_up_since: datetime | None = None,
) -> Report:
    report = Report()
    events = []
    for item in wanted_items:
        outcome = await upsert(settings, client, item)
        getattr(report, outcome).append(item.schedule_id)
        if outcome != "unchanged":
            desc = await describe_raw(client, item.schedule_id)
            caught = await _catch_up(client, item, desc, catch_up_since)
            if caught is not None:
                report.caught_up.append(item.schedule_id)
            found = await snapshot(client, desc)
            events.append(schedule_event("ScheduleUpserted", found, requested_by, details=caught))
    for schedule_id in remove:
        gone = await _snapshot_or_none(client, schedule_id)
        if await delete(client, schedule_id):
            report.deleted.append(schedule_id)
            if gone is not None:
                events.append(schedule_event("ScheduleDeleted", gone, requested_by))
    await publish_events(settings, events)
    return report


async def _snapshot_or_none(client: Client, schedule_id: str) -> Snapshot | None:
    try:
        return await snapshot(client, await describe_raw(client, schedule_id))
    except FlowledgerError:
        return None


async def sync_definition(
    settings: Settings,
    client: Client,
    records: Iterable[DefinitionRecord],
    tenant: str,
    definition_id: str,
    requested_by: str = "publish",
    retired: Iterable[DefinitionRecord] = (),
    catch_up_since: datetime | None = None,
) -> Report:
    """Make one definition's schedules those of its latest published version among
    `records` (none when no version is left); `retired` are versions whose schedules
    may exist though no longer wanted (those just removed, or all that were known).
    `catch_up_since` is when the publish of that version began: a one-time schedule
    whose `at` came after it and passed before Temporal held the schedule is started
    once (schedule_plan.catch_up)."""
    mine = [r for r in records if r.tenant == tenant and r.definition_id == definition_id]
    latest = max(mine, key=lambda r: r.version, default=None)
    items = schedules_of(latest) if latest is not None else []
    present = {
        sid
        for sid, memo in (await owned(settings, client)).items()
        if memo.get(MEMO_TENANT) == tenant and memo.get(MEMO_DEFINITION) == definition_id
    }
    # Temporal's list lags behind: the schedules the versions named are candidates too.
    present |= {w.schedule_id for r in [*mine, *retired] for w in schedules_of(r)}
    return await _apply(
        settings,
        client,
        items,
        stale(present, [i.schedule_id for i in items]),
        requested_by,
        catch_up_since,
    )


async def reconcile(
    settings: Settings,
    client: Client,
    records: Iterable[DefinitionRecord],
    requested_by: str = "reconciler",
) -> Report:
    """Make Temporal's schedules (this deployment's) match the published definitions."""
    want = wanted(records)
    present = await owned(settings, client)
    return await _apply(settings, client, want.values(), stale(present, want), requested_by)


async def snapshots(
    settings: Settings, client: Client, tenant: str | None = None
) -> list[Snapshot]:
    out = []
    for schedule_id, memo in sorted((await owned(settings, client)).items()):
        if tenant is not None and memo.get(MEMO_TENANT) != tenant:
            continue
        try:
            desc = await describe_raw(client, schedule_id)
        except FlowledgerError:
            # Listed but deleted meanwhile (the list lags behind).
            continue
        out.append(await snapshot(client, desc))
    return out


async def list_schedules(
    settings: Settings, client: Client, tenant: str | None = None
) -> list[dict[str, Any]]:
    return [found.as_dict() for found in await snapshots(settings, client, tenant)]


async def describe(client: Client, schedule_id: str) -> dict[str, Any]:
    return (await snapshot(client, await describe_raw(client, schedule_id))).as_dict()


async def pause(
    settings: Settings, client: Client, schedule_id: str, note: str | None, requested_by: str
) -> dict[str, Any]:
    return await _set_paused(settings, client, schedule_id, note, requested_by, paused=True)


async def unpause(
    settings: Settings, client: Client, schedule_id: str, note: str | None, requested_by: str
) -> dict[str, Any]:
    return await _set_paused(settings, client, schedule_id, note, requested_by, paused=False)


async def _set_paused(
    settings: Settings,
    client: Client,
    schedule_id: str,
    note: str | None,
    requested_by: str,
    *,
    paused: bool,
) -> dict[str, Any]:
    verb = "pause" if paused else "unpause"
    handle = client.get_schedule_handle(schedule_id)
    text = note or f"{verb}d by {requested_by}"
    try:
        await (handle.pause(note=text) if paused else handle.unpause(note=text))
    except RPCError as exc:
        raise _failed(verb, schedule_id, exc) from exc
    kind = "SchedulePaused" if paused else "ScheduleUnpaused"
    return await _recorded(settings, client, schedule_id, kind, requested_by, note)


async def trigger(
    settings: Settings, client: Client, schedule_id: str, requested_by: str
) -> dict[str, Any]:
    """One run now, under the schedule's overlap policy."""
    handle = client.get_schedule_handle(schedule_id)
    try:
        await handle.trigger()
    except RPCError as exc:
        raise _failed("trigger", schedule_id, exc) from exc
    return await _recorded(settings, client, schedule_id, "ScheduleTriggered", requested_by, None)


async def backfill(
    settings: Settings,
    client: Client,
    schedule_id: str,
    start: datetime,
    end: datetime,
    requested_by: str,
    overlap: str | None = None,
) -> dict[str, Any]:
    """The runs the schedule would have started between `start` and `end`, started
    now under its overlap policy (or `overlap`, for this backfill only)."""
    if end <= start:
        raise InvalidInput(
            f"--to {end.isoformat()} is not after --from {start.isoformat()}",
            status=400,
            start=start.isoformat(),
            end=end.isoformat(),
        )
    window = ScheduleBackfill(
        start_at=start, end_at=end, overlap=OVERLAP[overlap] if overlap else None
    )
    handle = client.get_schedule_handle(schedule_id)
    try:
        await handle.backfill(window)
    except RPCError as exc:
        raise _failed("backfill", schedule_id, exc) from exc
    details = {"from": start.isoformat(), "to": end.isoformat(), "overlap": overlap}
    return await _recorded(
        settings, client, schedule_id, "ScheduleBackfilled", requested_by, None, details
    )


async def _recorded(
    settings: Settings,
    client: Client,
    schedule_id: str,
    kind: str,
    requested_by: str,
    note: str | None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    found = await snapshot(client, await describe_raw(client, schedule_id))
    await publish_events(settings, [schedule_event(kind, found, requested_by, note, details)])
    return {**found.as_dict(), "action": kind, **({"backfill": details} if details else {})}
