"""The runtime events the projector and replay benchmarks project: a generated mix
produced to the runtime topic (a sibling module: the benchmarks run as scripts)."""

from __future__ import annotations

from flowledger.settings import Settings
from projections.synthetic import stream
from topics import clients
from topics.catalogue import RUNTIME

EVENTS_PER_RUN = 20
STEPS = (3, 7)  # about 20 events a run


def produce(settings: Settings, events: int) -> int:
    """Produce ``events`` generated runtime events over ``events // EVENTS_PER_RUN`` runs."""
    producer = clients.producer(settings, **{"linger.ms": 20, "batch.num.messages": 10000})
    topic = settings.topic(RUNTIME)
    produced = 0
    runs = max(1, events // EVENTS_PER_RUN)
    for item in stream(runs=runs, seed=1, steps=STEPS):
        producer.produce(topic, key=item.key, value=item.value)
        produced += 1
        if produced % 10000 == 0:
            producer.poll(0)
        if produced >= events:
            break
    assert producer.flush(120) == 0, "Kafka did not acknowledge every record"
    return produced
