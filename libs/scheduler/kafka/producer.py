"""A producer port: produce records, then `flush()` to learn that every one of them is durable.

Consumers that must not commit an offset before their output is acknowledged (the bucketer, the
releaser) produce a batch, flush, and only then commit. `flush` raises `ProduceError` if any
record produced since the previous flush was not acknowledged, so the caller retries the batch.

- `KafkaRecordProducer`: confluent-kafka, idempotent, acks=all.
- `InMemoryProducer`: the fake for unit tests (records in a list; can be told to fail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer


class ProduceError(RuntimeError):
    """At least one record was not acknowledged by Kafka: retry the batch (nothing committed)."""


class RecordProducer(Protocol):
    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue one record (may block briefly while the local queue is full)."""

    def flush(self, timeout_s: float) -> None:
        """Wait until every queued record is acknowledged; raise `ProduceError` otherwise."""


class KafkaRecordProducer:
    """confluent-kafka producer: acks=all, idempotent (no duplicates from internal retries)."""

    def __init__(self, client_config: dict[str, Any], **overrides: Any) -> None:
        config: dict[str, Any] = {
            **client_config,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            **overrides,
        }
        self._producer = Producer(config)
        self._failures: list[str] = []

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                return
            except BufferError:
                # Local queue full: serve delivery reports until there is room (backpressure,
                # never a drop).
                self._producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")

    def flush(self, timeout_s: float) -> None:
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining:
            raise ProduceError(f"{remaining} record(s) not acknowledged within {timeout_s} s")
        if failures:
            raise ProduceError(f"{len(failures)} record(s) failed, first: {failures[0]}")

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)


@dataclass(frozen=True)
class Produced:
    topic: str
    key: bytes | None
    value: bytes


class InMemoryProducer:
    """Fake producer: `records` holds what was acknowledged.

    A failed flush may still have delivered part of the batch, as a real producer does (a
    retry of the batch then duplicates that part):
    - `fail_next_flush` simulates an outage: that many flushes fail, after delivering the first
      `delivered_on_failure` of their records;
    - `max_record_bytes` (topic -> bytes) is a topic's `max.message.bytes`: a bigger record
      (key + value) is refused and its flush fails, the others are delivered
      (tests/integration/bucketer/test_producer_contract.py checks both on the real broker)."""

    def __init__(self, max_record_bytes: dict[str, int] | None = None) -> None:
        self.records: list[Produced] = []
        self._pending: list[Produced] = []
        self.fail_next_flush = 0
        self.delivered_on_failure = 0
        self.max_record_bytes = dict(max_record_bytes or {})

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._pending.append(Produced(topic, key, value))

    def flush(self, timeout_s: float) -> None:
        pending, self._pending = self._pending, []
        if self.fail_next_flush > 0:
            self.fail_next_flush -= 1
            self.records.extend(pending[: self.delivered_on_failure])
            lost = len(pending[self.delivered_on_failure :])
            raise ProduceError(f"{lost} record(s) not acknowledged (simulated)")
        refused = [r for r in pending if self._too_big(r)]
        self.records.extend(r for r in pending if not self._too_big(r))
        if refused:
            first = f"{refused[0].topic}: Broker: Message size too large"
            raise ProduceError(f"{len(refused)} record(s) failed, first: {first}")

    def _too_big(self, record: Produced) -> bool:
        limit = self.max_record_bytes.get(record.topic)
        size = len(record.key or b"") + len(record.value)
        return limit is not None and size > limit

    def on(self, topic: str) -> list[Produced]:
        return [record for record in self.records if record.topic == topic]
