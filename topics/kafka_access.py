"""Failing fast on a cluster that refuses us. librdkafka treats a refused SASL
handshake or TLS certificate like a broker that is down: it retries for ever, and
metadata calls only time out. Here the first client of a secured cluster in a process
checks access first (and the error callback of every client stops it later, should
the credentials be revoked), so a wrong password is one clear error, before anything
was done, instead of a component that hangs."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from flowledger.errors import AuthenticationFailed
from topics.codes import KAFKA_AUTH_FAILED

if TYPE_CHECKING:
    from collections.abc import Callable

_REFUSALS = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
)
# A broker that is merely down is the components' own business (they retry); the
# check gives up on it after this long and lets them.
CHECK_S = 10.0

_checked: set[tuple[tuple[str, str], ...]] = set()
_lock = threading.Lock()


def refused(error: KafkaError) -> AuthenticationFailed | None:
    if error.code() not in _REFUSALS:
        return None
    if "transport failure" in error.str().lower():
        # A connection cut during the handshake (a broker restarting, a client
        # closing) is reported as an authentication error too, but it is not a no.
        return None
    return AuthenticationFailed(
        f"Kafka refused the connection: {_reason(error.str())}",
        code=KAFKA_AUTH_FAILED,
    )


def _reason(text: str) -> str:
    # librdkafka prefixes the broker ("sasl_ssl://host:port/bootstrap: ...") and
    # appends timings: neither helps the reader, and the message stays one line.
    reason = text.split(": ", 1)[1] if "://" in text.split(": ", 1)[0] else text
    return reason.split(" (after ", 1)[0].strip()


def raise_refusal(error: KafkaError) -> None:
    """Every secured client's error_cb: confluent-kafka re-raises it from the poll,
    consume or flush that served it."""
    failure = refused(error)
    if failure is not None:
        raise failure


def check(config: dict[str, Any], make: Callable[[dict[str, Any]], AdminClient]) -> None:
    """Once per process and configuration: raise AuthenticationFailed if the cluster
    refuses these credentials; return when it answers, or is not answering at all."""
    key = tuple(sorted((k, str(v)) for k, v in config.items() if k != "client.id"))
    with _lock:
        if key in _checked:
            return
    seen: list[AuthenticationFailed] = []

    def on_error(error: KafkaError) -> None:
        failure = refused(error)
        if failure is not None:
            seen.append(failure)

    # log_level 0: the refusal is reported once, below, not as librdkafka's log spam.
    probe = make({**config, "error_cb": on_error, "log_level": 0})
    deadline = time.monotonic() + CHECK_S
    while time.monotonic() < deadline:
        try:
            probe.list_topics(timeout=0.5)
        except KafkaException:
            probe.poll(0)
            if seen:
                raise seen[0] from None
            continue
        with _lock:
            _checked.add(key)
        return
