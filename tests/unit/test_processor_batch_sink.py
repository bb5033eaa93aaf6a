"""A batch's records wait for their own acknowledgements: the wait ends when every
record sent is reported, not at a report that comes while records are still being
sent, and only what Kafka did not acknowledge is produced again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from processors.audit import BatchSink
from tests.waiting import holds
from topics.producing import Outgoing


class ReportingProducer:
    """Keeps each produce's delivery callback, for the test to report when it likes
    (as the Acknowledger's thread would); a flush reports whatever is left."""

    def __init__(self) -> None:
        self.produced: list[bytes | None] = []
        self.reports: list[Callable[[Any, Any], None]] = []
        self.reported: set[int] = set()

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append(kwargs["value"])
        self.reports.append(kwargs["on_delivery"])

    def report(self, n: int, err: Any = None) -> None:
        self.reported.add(n)
        self.reports[n](err, Written(n))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        for n in range(len(self.reports)):
            if n not in self.reported:
                self.report(n)
        return 0


class Written:
    """Where a record landed, as a delivery report gives it."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


async def no_retry(_what: str, call: Callable[[], Any]) -> None:
    await call()


def item(n: int) -> Outgoing:
    return Outgoing("audit", b"k", f"record-{n}".encode())


def test_an_early_report_does_not_end_the_wait_for_the_records_after_it() -> None:
    async def scenario() -> ReportingProducer:
        producer = ReportingProducer()
        sink = BatchSink(producer)  # type: ignore[arg-type]
        sink.send(item(0))
        # Reported before the rest is sent: its settle call comes while finish waits.
        producer.report(0)
        sink.send(item(1))
        sink.send(item(2))
        finishing = asyncio.create_task(sink.finish(no_retry, 30))
        await holds(lambda: not finishing.done(), 0.2, "the wait for the records after it")
        producer.report(1)
        producer.report(2)
        await asyncio.wait_for(finishing, 5)
        return producer

    producer = asyncio.run(scenario())
    # Each record was produced once: nothing acknowledged was sent again.
    assert producer.produced == [b"record-0", b"record-1", b"record-2"]


def test_a_record_kafka_refused_is_produced_again() -> None:
    async def scenario() -> ReportingProducer:
        producer = ReportingProducer()
        sink = BatchSink(producer)  # type: ignore[arg-type]
        sink.send(item(0))
        sink.send(item(1))
        producer.report(0)
        producer.report(1, err="broker refused")
        await asyncio.wait_for(sink.finish(no_retry, 30), 5)
        return producer

    producer = asyncio.run(scenario())
    assert producer.produced == [b"record-0", b"record-1", b"record-1"]
