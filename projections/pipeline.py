"""The one driver of the write path, shared by the live projector and the replay
rebuild: batches are pipelined, so that while a writer thread runs batch N's
transaction (rows, refusals and checkpoints together) the caller's thread folds batch
N+1 on the states N leaves behind.

At most one batch is in flight, and its transaction first checks that the stored
checkpoints are where the plan assumed. If they are not (another instance applied
those partitions meanwhile) or the write fails, the batch is applied afresh in one
synchronous transaction that re-reads everything, and the batch planned behind it is
planned again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from flowledger import retry, tracing
from flowledger.errors import ServiceUnavailable
from projections.apply import Applier, BatchResult, Plan
from projections.codes import DATABASE_UNAVAILABLE
from projections.records import Incoming, Slot

log = logging.getLogger(__name__)

DB_RETRY_MAX_S = 5.0
T = TypeVar("T")
OnBatch = Callable[[BatchResult, int], None]  # a committed batch and its record count


def _transient(exc: BaseException) -> bool:
    # busy, locked or unreachable; or a pooled connection that died under us
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def retry_database(work: Callable[[], T], timeout_s: float) -> T:
    """``work()``, again while the database is busy or unreachable, for ``timeout_s``."""
    try:
        return retry.until_deadline(
            work, transient=_transient, seconds=timeout_s, cap=DB_RETRY_MAX_S
        )
    except OperationalError as exc:
        raise ServiceUnavailable(
            f"projection database unavailable: {exc.orig}", code=DATABASE_UNAVAILABLE
        ) from exc


class Pipeline:
    """Drives batches through ``applier`` into ``engine``. ``positions`` holds, per
    partition, the next offset known to be applied: the caller seeds it (from the
    stored checkpoints) and drops the partitions it gives up."""

    def __init__(
        self,
        engine: Engine,
        applier: Applier,
        *,
        retry_timeout_s: float,
        on_batch: OnBatch | None = None,
        thread_name: str = "projection-writer",
        tracer: Tracer | None = None,
    ) -> None:
        self.engine = engine
        self.tracer = tracer or trace.NoOpTracer()
        self.applier = applier
        self.positions: dict[Slot, int] = {}
        self._retry_timeout_s = retry_timeout_s
        self._on_batch = on_batch
        self._thread_name = thread_name
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: tuple[Plan, Future[None]] | None = None

    def submit(self, batch: Sequence[Incoming]) -> None:
        """Plan ``batch`` and hand it to the writer, finishing the batch before it."""
        after = self._inflight[0] if self._inflight is not None else None
        began = time.perf_counter()
        plan = self._plan(batch, after)
        planned = time.perf_counter() - began
        if not self.drain() and after is not None:
            # The plan was folded on states the batch before it did not leave behind.
            began = time.perf_counter()
            plan = self._plan(batch, None)
            planned = time.perf_counter() - began
        plan.result.seconds = planned
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix=self._thread_name)
        self._inflight = (plan, self._writer.submit(self._write, plan))

    def drain(self, redo: bool = True) -> bool:
        """Finish the batch in flight; False when it had to be applied afresh (or, with
        ``redo=False``, was left for the next start to apply)."""
        if self._inflight is None:
            return True
        plan, future = self._inflight
        self._inflight = None
        try:
            future.result()
        except Exception as exc:
            if not redo:
                log.warning("batch in flight not written (%s); it is applied on restart", exc)
                return False
            log.info("pipelined batch not written (%s); applying it afresh", exc)
            self.apply(plan.records)
            return False
        self.applier.written(plan)
        self._account(plan.result, len(plan.records))
        return True

    def apply(self, batch: Sequence[Incoming]) -> BatchResult:
        """Apply a batch synchronously, in one transaction that re-reads everything."""

        def work() -> BatchResult:
            with self.engine.begin() as conn:
                return self.applier.apply(conn, batch)

        began = time.perf_counter()
        with self._batch_span(batch):
            result = retry_database(work, self._retry_timeout_s)
        result.seconds = time.perf_counter() - began
        self.applier.committed(result)
        self._account(result, len(batch))
        return result

    def close(self, redo: bool = False) -> None:
        """Finish (``redo``) or leave the batch in flight, and stop the writer."""
        try:
            self.drain(redo=redo)
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def _plan(self, batch: Sequence[Incoming], after: Plan | None) -> Plan:
        return retry_database(
            lambda: self.applier.plan(self.engine, batch, self.positions, after),
            self._retry_timeout_s,
        )

    def _write(self, plan: Plan) -> None:
        # runs on the writer thread
        began = time.perf_counter()
        with self._batch_span(plan.records), self.engine.begin() as conn:
            self.applier.write(conn, plan)
        plan.result.seconds += time.perf_counter() - began

    def _batch_span(self, batch: Sequence[Incoming]) -> AbstractContextManager[Span]:
        """A span per transaction, linked to the trace of every record it applies
        (one batch carries many traces, so links rather than a parent)."""
        links = [link for r in batch if (link := tracing.link_to(r.traceparent)) is not None]
        return self.tracer.start_as_current_span(
            "flowledger.projector.batch",
            links=links,
            attributes={"flowledger.records": len(batch), "flowledger.traced_records": len(links)},
        )

    def _account(self, result: BatchResult, records: int) -> None:
        self.positions.update(result.next_offsets)
        if self._on_batch is not None:
            self._on_batch(result, records)
