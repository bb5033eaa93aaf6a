"""Held early events: a correlated event that matched no wait yet is held for the
early-event window and delivered when a wait appears that may take it (§5). The
events themselves live in router_index.EarlyEvents; this is where plans become held
events, are restored after a restart or rebalance, and become deliveries again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from processors.pipeline import Plan, SignalTarget, plan_from_held_audit
from processors.router_index import EarlyEvents, HeldEvent, OpenWait, RouterIndex, eligible
from schemas.audit import AuditRecord, Delivery


class Holding:
    def __init__(self, skew: timedelta, window: timedelta) -> None:
        self.skew = skew
        self.window = window
        self.early = EarlyEvents(skew)
        # Restored held events that their waits already took (the previous owner
        # signalled them and stopped before auditing them again): to audit, complete.
        self.finished: list[Plan] = []

    def held_event(self, plan: Plan) -> HeldEvent:
        assert plan.envelope is not None and plan.correlation is not None
        assert plan.correlation.key is not None
        return HeldEvent(
            tenant=plan.envelope.tenant,
            event_type=plan.envelope.event_type,
            correlation_key=plan.correlation.key,
            event_id=str(plan.envelope.event_id),
            received_at=plan.record.timestamp,
            expires_at=plan.record.timestamp + self.window,
            partition=plan.record.at[0],
            offset=plan.record.at[1],
            item=plan,
        )

    def hold(self, plan: Plan, index: RouterIndex) -> list[OpenWait]:
        """Hold the plan's event; the waits already open that may take it. A wait that
        opened while its batch was in flight was offered the held events before this
        one was among them, so it is offered again."""
        held = self.held_event(plan)
        self.early.hold(held)
        return [w for w in index.matching(*held.key) if eligible(w, held.received_at, self.skew)]

    def restore(
        self,
        pending: Mapping[str, AuditRecord],
        topic: str,
        owned: set[int],
        now: datetime,
        index: RouterIndex,
        routing_partition: int | None = None,
    ) -> list[OpenWait]:
        """The early events of newly owned partitions, from their held audits: the
        commit went past them when they were held, so this is where they live on.
        Returns the waits already open that may take one of them: a wait that opened
        while its event was held elsewhere (before this instance owned the partition,
        or before it started) must be offered it now, or the wake-up is lost.
        Partitioned routing passes the routing partition whose held audits `pending`
        are: all of them are that partition's."""
        offer: dict[str, OpenWait] = {}
        for key, audit in list(pending.items()):
            routed = None
            if routing_partition is not None:
                routed = (routing_partition, audit.source_offset)
            elif audit.source_topic != topic or audit.source_partition not in owned:
                continue
            plan = plan_from_held_audit(audit, key, routed)
            taken = index.resolved_by.get((audit.tenant or "", audit.event_id or ""), [])
            if taken:
                delivered = [
                    Delivery(run_id=run, wait_id=wait, kind="signal", outcome="delivered")
                    for run, wait in taken
                ]
                plan.audit = plan.audit.model_copy(
                    update={"deliveries": [*plan.audit.deliveries, *delivered]}
                )
                self.finished.append(plan)
                continue
            held = self.held_event(plan)
            if held.expires_at > now:
                self.early.hold(held)
                for wait in index.matching(*held.key):
                    if eligible(wait, held.received_at, self.skew):
                        offer[wait.wait_id] = wait
        return list(offer.values())

    def settle(self, index: RouterIndex) -> None:
        """Held events that the waits just closed took: finished, with that delivery."""
        taken, index.taken = index.taken, []
        for wait, event_id in taken:
            for held in self.early.take_event(wait.key, event_id):
                plan: Plan = held.item
                delivery = Delivery(
                    run_id=wait.run_id, wait_id=wait.wait_id, kind="signal", outcome="delivered"
                )
                plan.audit = plan.audit.model_copy(
                    update={"deliveries": [*plan.audit.deliveries, delivery]}
                )
                self.finished.append(plan)

    def take(
        self, opened: list[OpenWait], workflow_id: Callable[[str], str]
    ) -> list[tuple[Plan, SignalTarget]]:
        """The held events that the newly opened waits may take, each with its target."""
        pairs: list[tuple[Plan, SignalTarget]] = []
        for wait in opened:
            for held in self.early.take_for(wait):
                target = SignalTarget(wait.run_id, wait.wait_id, workflow_id(wait.run_id))
                pairs.append((held.item, target))
        return pairs

    def expire(self, now: datetime) -> list[Plan]:
        return [h.item for h in self.early.expire(now)]

    def drop_partitions(self, partitions: set[int]) -> None:
        self.early.drop_partitions(partitions)
