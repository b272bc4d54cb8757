"""The Kafka publisher port, its confluent-kafka adapter and an in-memory fake.

`publish` returns only once Kafka acknowledged the record (acks=all, idempotent producer): the
delivery report arrives on the producer's poll thread and resolves an asyncio future on the
event loop. Any failure (full local queue, broker error, delivery timeout) raises
`PublishError`; the route answers 503 with Retry-After and writes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from scheduler.clock import Clock
from scheduler.settings import KafkaSettings

log = logging.getLogger("scheduler_ingest.publisher")


class PublishError(RuntimeError):
    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause  # queue_full | kafka_error | closed


class Publisher(Protocol):
    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return once Kafka acknowledged the record; raise `PublishError` otherwise."""

    async def publish_many(
        self, records: Sequence[tuple[str, bytes, bytes]]
    ) -> list[PublishError | None]:
        """Publish (topic, key, value) records; return once every one is settled, with the
        error of each record (None: acknowledged), in order."""

    def ready(self, timeout_s: float) -> bool:
        """Does the cluster answer (metadata request)? Blocking: call it off the event loop."""

    def close(self) -> None:
        """Deliver what is queued (bounded wait), then release the client."""


def producer_config(kafka: KafkaSettings, timeout_ms: int, linger_ms: float) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "enable.idempotence": True,  # no duplicates or reordering on internal retries
        "acks": "all",
        "linger.ms": linger_ms,
        "message.timeout.ms": timeout_ms,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 256 * 1024,
    }


class KafkaPublisher:
    def __init__(self, config: dict[str, Any], clock: Clock, on_latency: LatencyHook) -> None:
        # librdkafka's own log lines go through Python logging, not straight to stderr.
        self._producer = Producer({**config, "logger": log})
        self._clock = clock
        self._on_latency = on_latency
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="ingest-kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        # Delivery reports (and their future resolutions) are served from this thread only.
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self._stop.is_set():
            raise PublishError("closed", "the publisher is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        started = self._clock.monotonic_ms()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, err)

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        except BufferError as exc:
            raise PublishError("queue_full", "the Kafka producer queue is full") from exc
        except Exception as exc:
            raise PublishError("kafka_error", f"Kafka refused the record: {exc}") from exc
        await future
        self._on_latency(topic, (self._clock.monotonic_ms() - started) / 1000.0)

    async def publish_many(
        self, records: Sequence[tuple[str, bytes, bytes]]
    ) -> list[PublishError | None]:
        # One future for the whole batch, settled by the last delivery report: per-record
        # futures and event-loop wake-ups cost more than the produce calls themselves.
        if self._stop.is_set():
            return [PublishError("closed", "the publisher is shutting down")] * len(records)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        errors: list[PublishError | None] = [None] * len(records)
        started = self._clock.monotonic_ms()
        # One count per record plus a guard released after the last produce(), so reports
        # arriving while producing cannot settle the batch early.
        pending = _Countdown(
            len(records) + 1, lambda: loop.call_soon_threadsafe(_settle, done, None)
        )

        def report(index: int) -> Callable[[KafkaError | None, Message], None]:
            def delivered(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    errors[index] = PublishError("kafka_error", f"Kafka did not acknowledge: {err}")
                pending.down()

            return delivered

        for index, (topic, key, value) in enumerate(records):
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report(index))
            except BufferError:
                errors[index] = PublishError("queue_full", "the Kafka producer queue is full")
                pending.down()
            except Exception as exc:  # noqa: BLE001 - KafkaException and friends
                errors[index] = PublishError("kafka_error", f"Kafka refused the record: {exc}")
                pending.down()
        pending.down()  # the guard
        await done
        if records:
            self._on_latency(records[0][0], (self._clock.monotonic_ms() - started) / 1000.0)
        return errors

    def ready(self, timeout_s: float) -> bool:
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return bool(metadata.brokers)

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=5)
        if remaining:
            log.warning("%d record(s) not acknowledged at shutdown", remaining)


LatencyHook = Callable[[str, float], None]


class _Countdown:
    """Calls `on_zero` once, from whichever thread takes the count to zero."""

    def __init__(self, count: int, on_zero: Callable[[], object]) -> None:
        self._count = count
        self._on_zero = on_zero
        self._lock = threading.Lock()

    def down(self) -> None:
        with self._lock:
            self._count -= 1
            zero = self._count == 0
        if zero:
            self._on_zero()


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():  # the awaiting request was cancelled (client went away)
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(PublishError("kafka_error", f"Kafka did not acknowledge: {err}"))


@dataclass(frozen=True)
class Published:
    topic: str
    key: bytes
    value: bytes


class FakePublisher:
    """Records what would have been published; `fail_with` makes every publish fail.

    `max_record_bytes` (topic -> bytes) is a topic's `max.message.bytes`, as the broker applies
    it: a bigger record (key + value) is refused, the records of other partitions in its batch
    are acknowledged (tests/integration/ingest/test_publisher_contract.py, on the real broker
    too; there the small records batched with it on its partition may be refused with it)."""

    def __init__(self, max_record_bytes: dict[str, int] | None = None) -> None:
        self.records: list[Published] = []
        self.fail_with: PublishError | None = None
        self.max_record_bytes = dict(max_record_bytes or {})
        self.is_ready = True

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        limit = self.max_record_bytes.get(topic)
        if limit is not None and len(key) + len(value) > limit:
            raise PublishError("kafka_error", "Kafka did not acknowledge: MSG_SIZE_TOO_LARGE")
        self.records.append(Published(topic, key, value))

    async def publish_many(
        self, records: Sequence[tuple[str, bytes, bytes]]
    ) -> list[PublishError | None]:
        results: list[PublishError | None] = []
        for topic, key, value in records:
            try:
                await self.publish(topic, key, value)
                results.append(None)
            except PublishError as exc:
                results.append(exc)
        return results

    def ready(self, timeout_s: float) -> bool:
        return self.is_ready

    def close(self) -> None:
        pass
