"""Kafka side of the releaser: the ring publisher and leadership by group membership.

Leadership: every replica joins one consumer group on a one-partition lease topic; the member
assigned its partition is the leader and the only one that releases. When it dies or stalls
beyond the session timeout the group reassigns the partition within that bound. A stalled
ex-leader may finish the bucket it was releasing before it sees the revocation; that repeats
work but is harmless (release is idempotent, the dispatcher deduplicates).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from scheduler.clock import Clock
from scheduler.kafka.admin import ensure_topics
from scheduler.ops import Health
from scheduler.records import DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.pending_counts import PendingCounts
from scheduler.store.ports import AppLookup, BucketStore, MessageStore
from scheduler.topics import Topics

from .codecs import Codecs
from .metrics import ReleaseMetrics
from .pending import PendingByHorizon
from .releaser import Releaser
from .settings import ReleaseSettings

log = logging.getLogger(__name__)


def ensure_lease_topic(kafka: KafkaSettings, topics: Topics) -> None:
    """`scheduler setup` creates it; made here too so a releaser never waits for a missing one."""
    spec = next(s for s in topics.specs() if s.name == topics.releaser_lease)
    ensure_topics(AdminClient(kafka.client_config()), [spec], kafka)


class KafkaRingPublisher:
    def __init__(self, producer: Producer, topics: Topics, codecs: Codecs) -> None:
        self._producer = producer
        self._topics = topics
        self._codecs = codecs
        self._errors: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._errors.append(error)

    def publish(self, message: DueMessage, now_ms: int) -> None:
        topic = self._topics.ring.topic_for_send(message.due_ms, now_ms)
        value = self._codecs.due.encode(message)
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=message.message_id.encode(), on_delivery=self._delivered
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self) -> None:
        while self._producer.flush(5.0) > 0:
            log.warning("ring producer still flushing")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(errors[0])


class Leadership:
    """Membership of the releaser group; `is_leader` while the lease partition is ours."""

    def __init__(self, consumer: Consumer, topic: str, on_change: Callable[[bool], None]) -> None:
        self._consumer = consumer
        self._on_change = on_change
        self.is_leader = False
        consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and not self.is_leader:
            self.is_leader = True
            log.info("became the releasing leader")
            self._on_change(True)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.is_leader:
            self.is_leader = False
            log.info("lost the release lease")
            self._on_change(False)

    def wait(self, timeout_s: float) -> None:
        """Serve group callbacks; doubles as the tick's sleep."""
        msg = self._consumer.poll(timeout_s)
        if msg is not None and msg.error() is not None:
            log.warning("lease consumer: %s", msg.error())


def run_releaser(
    *,
    kafka: KafkaSettings,
    scheduling: SchedulingSettings,
    settings: ReleaseSettings,
    buckets: BucketStore,
    messages: MessageStore,
    apps: AppLookup,
    clock: Clock,
    metrics: ReleaseMetrics,
    stop: threading.Event,
    health: Health | None = None,
    pending_counts: PendingCounts | None = None,
) -> None:
    health = health or Health(clock)
    topics = Topics(kafka, scheduling)
    ensure_lease_topic(kafka, topics)
    producer = Producer(
        {**kafka.client_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    consumer_conf: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": f"{kafka.topic_prefix}releaser",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 5),
        "max.poll.interval.ms": 600_000,
        "enable.auto.commit": False,
    }
    consumer = Consumer(consumer_conf)
    pending = (
        None
        if pending_counts is None
        else PendingByHorizon(
            counts=pending_counts,
            buckets=buckets,
            clock=clock,
            scheduling=scheduling,
            metrics=metrics,
        )
    )

    def on_leadership(lead: bool) -> None:
        metrics.leader.set(lead)
        if not lead and pending is not None:
            pending.clear()  # only the leader exports the pending gauge

    leadership = Leadership(consumer, topics.releaser_lease, on_leadership)
    writers = ThreadPoolExecutor(max_workers=settings.writers, thread_name_prefix="release-write")
    releaser = Releaser(
        clock=clock,
        scheduling=scheduling,
        buckets=buckets,
        messages=messages,
        apps=apps,
        publisher=KafkaRingPublisher(producer, topics, Codecs.build(kafka)),
        writers=writers,
        metrics=metrics,
        initial_backfill_ms=settings.initial_backfill_ms,
    )
    try:
        while not stop.is_set():
            leadership.wait(settings.tick_ms / 1000)
            health.beat()
            if not leadership.is_leader:
                health.set_ready(True, "standby (another replica leads)")
            elif not stop.is_set():
                try:
                    releaser.tick()
                    health.set_ready(True, "leading")
                    if pending is not None:
                        pending.maybe_refresh()
                except Exception as exc:
                    # Cassandra or Kafka trouble: nothing was lost (the watermark did not move
                    # past the failing bucket); try again on the next tick.
                    health.set_ready(False, f"release tick failing: {exc}")
                    log.exception("release tick failed; retrying next tick")
    finally:
        consumer.close()  # leaves the group: another replica takes over at once
        writers.shutdown(wait=True)
        producer.flush(10)
