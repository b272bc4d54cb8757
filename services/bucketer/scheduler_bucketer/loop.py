"""The consume loop: batch -> process -> commit, with rewind-and-backoff on transient failure.

Offsets are committed only after `BatchProcessor.process` returned, i.e. after every write of the
batch is durable in Cassandra and every produced record is acknowledged by Kafka. When it
raises (Cassandra or Kafka unavailable, a registry outage), nothing is committed: the loop seeks
its partitions back to the batch's first offsets, waits (exponential backoff) and consumes the
same records again, for as long as it takes. Stopping (SIGTERM) lets the current batch finish
and commit, then closes the consumer, which leaves the group cleanly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from cassandra import DriverException
from cassandra.cluster import NoHostAvailable
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from scheduler.clock import Clock
from scheduler.codec import RegistryError
from scheduler.domain.backoff import Backoff
from scheduler.kafka.producer import ProduceError
from scheduler.ops import Health
from scheduler.store.bucket_index import writer_client_id
from scheduler.topics import Topics

from .intake import InputRecord
from .metrics import BucketerMetrics
from .pipeline import BatchProcessor
from .settings import BucketerSettings

log = logging.getLogger("scheduler_bucketer.loop")
LAG_INTERVAL_MS = 5_000


def consumer_config(
    client_config: dict[str, object], settings: BucketerSettings
) -> dict[str, object]:
    return {
        **client_config,
        "group.id": settings.group_id,
        # Tells a releaser that this bucketer writes bucket index entries (upgrade backfill).
        "client.id": writer_client_id("bucketer"),
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(1_000, settings.session_timeout_ms // 4),
        "enable.auto.commit": False,  # commit only after the batch is durable
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group must not skip requests already written
        "isolation.level": "read_committed",  # transactional producers: only committed requests
    }


def failure_stage(error: BaseException) -> str:
    if isinstance(error, DriverException | NoHostAvailable):
        return "cassandra"
    if isinstance(error, ProduceError | KafkaException):
        return "kafka"
    if isinstance(error, RegistryError):
        return "registry"
    return "other"


class ConsumerLoop:
    def __init__(
        self,
        consumer: Consumer,
        processor: BatchProcessor,
        topics: Topics,
        settings: BucketerSettings,
        metrics: BucketerMetrics,
        clock: Clock,
        stop: threading.Event,
        health: Health | None = None,
    ) -> None:
        self._consumer = consumer
        self._processor = processor
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._stop = stop
        self._health = health or Health(clock)
        self._lag_reported_at: float | None = None
        self._backoff = Backoff(
            max_attempts=1_000_000,
            base_ms=settings.retry_initial_ms,
            max_delay_ms=settings.retry_max_ms,
        )

    def run(self) -> None:
        self._consumer.subscribe([self._topics.requests, self._topics.commands])
        log.info("consuming %s and %s", self._topics.requests, self._topics.commands)
        failures = 0
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(
                    self._settings.batch_size, self._settings.poll_timeout_s
                )
                self._health.beat()
                if not failures:
                    self._health.set_ready(True, "consuming")
                records = self._records(messages)
                self._report_lag()
                if not records:
                    continue
                started = self._clock.monotonic_ms()
                try:
                    self._processor.process(records)
                except Exception as exc:  # noqa: BLE001 - any failure: retry, never skip (no loss)
                    failures += 1
                    self._health.set_ready(False, f"batch failing ({failures}x): {exc}")
                    self._retry_later(records, exc, failures)
                    continue
                if failures:
                    log.info("batch succeeded after %d failed attempt(s)", failures)
                failures = 0
                self._commit(records)
                self._metrics.batch_size.observe(len(records))
                self._metrics.batch_seconds.observe((self._clock.monotonic_ms() - started) / 1000.0)
        finally:
            log.info("stopping: closing the consumer")
            self._consumer.close()

    def _report_lag(self) -> None:
        """Lag per assigned partition = high watermark - our position, every LAG_INTERVAL_MS.

        The high watermark comes cached with the last fetch response. A partition we have not
        consumed from since it was assigned has no position: its committed offset (one broker
        round trip) or, if none, the log start stands in.
        """
        now = self._clock.monotonic_ms()
        if self._lag_reported_at is not None and now - self._lag_reported_at < LAG_INTERVAL_MS:
            return
        self._lag_reported_at = now
        try:
            positions = self._consumer.position(self._consumer.assignment())
            unknown = [tp for tp in positions if tp.offset < 0]
            committed: dict[tuple[str, int], int] = {}
            if unknown:
                committed = {
                    (tp.topic, tp.partition): tp.offset
                    for tp in self._consumer.committed(unknown, timeout=5)
                }
            for tp in positions:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue  # no fetch response yet
                offset = tp.offset if tp.offset >= 0 else committed[(tp.topic, tp.partition)]
                if offset < 0:
                    offset = low
                lag = max(0, high - offset)
                self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        except KafkaException as exc:
            log.debug("consumer lag not available: %s", exc)

    def _records(self, messages: Sequence[Message]) -> list[InputRecord]:
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error: %s", error.str())
                continue
            kind, timestamp = message.timestamp()
            records.append(
                InputRecord(
                    topic=message.topic() or "",
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    key=message.key(),
                    value=message.value(),
                    timestamp_ms=timestamp if kind else None,  # 0: TIMESTAMP_NOT_AVAILABLE
                )
            )
        return records

    def _retry_later(self, records: list[InputRecord], error: Exception, failures: int) -> None:
        stage = failure_stage(error)
        delay_ms = self._backoff.delay_ms(min(failures, 30))
        self._metrics.retries.labels(stage).inc()
        log.warning(
            "batch of %d record(s) failed (%s, attempt %d): %s; not committed, retrying in %d ms",
            len(records),
            stage,
            failures,
            error,
            delay_ms,
            exc_info=stage == "other",
        )
        self._rewind(records)
        self._stop.wait(delay_ms / 1000.0)

    def _rewind(self, records: list[InputRecord]) -> None:
        first: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            first[key] = min(first.get(key, r.offset), r.offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Revoked meanwhile: its new owner starts from the committed offset anyway.
                log.info("cannot rewind %s[%d]: %s", topic, partition, exc)

    def _commit(self, records: list[InputRecord]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), r.offset + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance: the partitions' new owner replays from the last commit;
            # every write is idempotent, so that costs time, not correctness.
            log.warning("offset commit failed (batch will be replayed): %s", exc)
