"""Kafka side of the releaser: the ring publisher, leadership by group membership, fencing.

Leadership: every replica joins one consumer group on a one-partition lease topic; the member
assigned its partition is the leader and the only one that releases. When it dies or stalls
beyond the session timeout the group reassigns the partition within that bound.

Fencing: a lease alone cannot stop an ex-leader that was frozen (SIGSTOP, a VM pause) or cut off
while another replica took over: when it resumes, its produces are already queued. So every
replica publishes through a transactional producer with the same transactional id, initialised
each time the replica is assigned the lease. The new leader's `init_transactions` aborts the
old leader's open transaction (its records are never visible to the dispatcher, which reads the
ring read_committed) and fences its producer: the old leader's next commit fails, and it
releases nothing more until it is assigned the lease again. Its Cassandra writes cannot do harm:
the claim only grows, the watermark never moves backwards, and it marks and drops a partition
only after its transaction committed (docs/ARCHITECTURE.md, "The release path: claim, index,
fencing").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from scheduler.clock import Clock
from scheduler.kafka.admin import ensure_topics
from scheduler.kafka.groups import describe_groups_in_child
from scheduler.kafka.producer import KafkaRecordProducer
from scheduler.kafka.transactions import init_transactions
from scheduler.ops import Health
from scheduler.records import DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.bucket_index import Reconciler, writer_groups
from scheduler.store.pending_counts import PendingCounts
from scheduler.store.ports import AppLookup, BucketStore, MessageStore, ScheduleStore
from scheduler.store.usage import UsageStore
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.metrics import OccurrenceMetrics, ReleaseMetrics
from scheduler_releaser.settings import ReleaseSettings

from .core import Releaser
from .occurrences import OccurrenceRunner, run_while_leading, topic_codecs
from .pending import PendingByHorizon

log = logging.getLogger(__name__)
INIT_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_S = 30.0
# A newer producer with the same transactional id exists: another replica leads.
_FENCED_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
}


def ensure_lease_topic(kafka: KafkaSettings, topics: Topics) -> None:
    """`scheduler setup` creates it; made here too so a releaser never waits for a missing one."""
    spec = next(s for s in topics.specs() if s.name == topics.releaser_lease)
    ensure_topics(AdminClient(kafka.client_config()), [spec], kafka)


class ReleaserFenced(RuntimeError):
    """Another releaser initialised the shared transactional id: this one no longer leads."""


class KafkaRingPublisher:
    """Publishes released messages to their ring topics, one transaction per flushed chunk."""

    def __init__(self, make_producer: Callable[[], Producer], topics: Topics, codecs: Codecs):
        self._make_producer = make_producer
        self._topics = topics
        self._codecs = codecs
        self._producer: Producer | None = None
        self._in_transaction = False

    @property
    def started(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        """On being assigned the lease: a fresh producer whose `init_transactions` fences every
        earlier holder of the transactional id and aborts its open transaction."""
        self.close()
        producer = self._make_producer()
        init_transactions(producer, INIT_TIMEOUT_S)
        self._producer = producer
        log.info("ring producer initialised: earlier leaders are fenced")

    def close(self) -> None:
        producer, self._producer = self._producer, None
        self._in_transaction = False
        if producer is None:
            return
        try:
            producer.flush(0)
        except KafkaException as exc:
            # A fenced (or otherwise failed) producer raises its fatal error once more here,
            # after the commit did: nothing is left to deliver, and the caller must see the
            # fence (ReleaserFenced), not this.
            log.info("ring producer closed after a fatal error: %s", exc)

    def publish(self, message: DueMessage, now_ms: int) -> None:
        producer = self._require()
        if not self._in_transaction:
            producer.begin_transaction()
            self._in_transaction = True
        topic = self._topics.ring.topic_for_send(message.due_ms, now_ms)
        value = self._codecs.due.encode(message)
        while True:
            try:
                producer.produce(topic, value=value, key=message.message_id.encode())
                return
            except BufferError:
                producer.poll(0.05)

    def flush(self) -> None:
        """Commit the open transaction; its records are then visible in the ring."""
        producer = self._require()
        if not self._in_transaction:
            return
        try:
            producer.commit_transaction(COMMIT_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() in _FENCED_CODES:
                self.close()  # only a new assignment of the lease starts a new producer
                raise ReleaserFenced(f"ring producer fenced: {error}") from exc
            self._give_up_transaction(producer)
            raise
        self._in_transaction = False

    def abort(self) -> None:
        """After a failed tick: abort a transaction left open (its records are released again)."""
        if self._producer is not None and self._in_transaction:
            self._give_up_transaction(self._producer)

    def _give_up_transaction(self, producer: Producer) -> None:
        """After a failed commit: abort (the chunk is released again on the next tick), or start
        over with a new producer where the transaction cannot be aborted."""
        self._in_transaction = False
        try:
            producer.abort_transaction(COMMIT_TIMEOUT_S)
        except KafkaException:
            log.warning("ring transaction could not be aborted; a new producer takes over")
            self.close()

    def _require(self) -> Producer:
        if self._producer is None:
            raise ReleaserFenced("ring producer not initialised for this leadership")
        return self._producer


class Leadership:
    """Membership of the releaser group; `is_leader` while the lease partition is ours."""

    def __init__(self, consumer: Consumer, topic: str, on_change: Callable[[bool], None]) -> None:
        self._consumer = consumer
        self._on_change = on_change
        self.is_leader = False
        self.assignments = 0  # a new value: a new leadership, whose publisher must be started
        consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and not self.is_leader:
            self.is_leader = True
            self.assignments += 1
            log.info("became the releasing leader")
            self._on_change(True)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and self.is_leader:
            self.is_leader = False
            log.info("lost the release lease")
            self._on_change(False)

    def wait(self, timeout_s: float) -> None:
        """Serve group callbacks; doubles as the tick's sleep."""
        msg = self._consumer.poll(timeout_s)
        if msg is not None and msg.error() is not None:
            log.warning("lease consumer: %s", msg.error())


class ReleaseLoop:
    """One iteration of the releaser's main loop per `step()`: serve the lease group, then (as
    the leader) start the ring producer for this leadership and run one release tick.

    Liveness (`health.beat()`): a standby beats every iteration; a leader beats only when a tick
    completed. A leader that keeps the lease but cannot release (its producer never initialises,
    or every tick fails) would otherwise look alive forever while the standby waits behind it:
    after `Health`'s stale window /healthz fails, the orchestrator restarts the process, and the
    lease moves to a replica that may be able to release (chaos seed 4242, second run)."""

    def __init__(
        self,
        *,
        leadership: Leadership,
        publisher: KafkaRingPublisher,
        releaser: Releaser,
        health: Health,
        clock: Clock,
        metrics: ReleaseMetrics,
        session_timeout_ms: int,
        tick_s: float,
        stop: threading.Event,
        before_tick: Callable[[], None] | None = None,
        after_tick: Callable[[], object] | None = None,
    ) -> None:
        self._leadership = leadership
        self._publisher = publisher
        self._releaser = releaser
        self._health = health
        self._clock = clock
        self._metrics = metrics
        self._session_timeout_ms = session_timeout_ms
        self._tick_s = tick_s
        self._stop = stop
        self._before_tick = before_tick
        self._after_tick = after_tick
        self._started_for = 0  # the leadership (assignment count) the publisher was started for
        self._fenced_at: float | None = None
        self._led_for = 0  # the leadership whose first iteration already ran

    def step(self) -> None:
        leadership, publisher, health = self._leadership, self._publisher, self._health
        leadership.wait(self._tick_s)
        if not leadership.is_leader:
            health.beat()
            publisher.close()
            self._fenced_at = None
            health.set_ready(True, "standby (another replica leads)")
            return
        if self._led_for != leadership.assignments:
            # A new leadership starts its liveness window now, not at its last standby beat.
            self._led_for = leadership.assignments
            health.beat()
        if not publisher.started:
            # Fenced while the lease still looks ours: the newer leader's assignment will
            # revoke it soon. Start again (fencing back) only on a new assignment, or if the
            # lease is still ours after twice the session timeout.
            if (
                self._fenced_at is not None
                and self._started_for == leadership.assignments
                and self._clock.monotonic_ms() - self._fenced_at < 2 * self._session_timeout_ms
            ):
                health.set_ready(True, "fenced: waiting for the group to settle")
                return
            try:
                publisher.start()
                self._started_for, self._fenced_at = leadership.assignments, None
            except Exception as exc:
                health.set_ready(False, f"ring producer not ready: {exc}")
                log.exception("could not initialise the ring producer; retrying next tick")
                return
        if self._stop.is_set():
            return
        try:
            if self._before_tick is not None:
                self._before_tick()
            self._releaser.tick()
            health.beat()  # a leader is alive while it releases, not merely while it loops
            health.set_ready(True, "leading")
            if self._after_tick is not None:
                self._after_tick()
        except ReleaserFenced as exc:
            self._metrics.fenced.inc()
            self._fenced_at = self._clock.monotonic_ms()
            log.warning("%s: another releaser leads; standing by", exc)
        except Exception as exc:
            # Cassandra or Kafka trouble: nothing was lost (the watermark did not move
            # past the failing bucket); try again on the next tick.
            health.set_ready(False, f"release tick failing: {exc}")
            log.exception("release tick failed; retrying next tick")
            publisher.abort()


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
    schedules: ScheduleStore | None = None,
    usage: UsageStore | None = None,
    occurrence_metrics: OccurrenceMetrics | None = None,
) -> None:
    """With `schedules` (and `usage`, `occurrence_metrics`), the leader also runs the occurrence
    runner of recurring schedules, in a thread of its own."""
    health = health or Health(clock)
    topics = Topics(kafka, scheduling)
    ensure_lease_topic(kafka, topics)
    producer_config = {
        **kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Shared by every replica: the leader's init_transactions fences the previous one.
        "transactional.id": f"{kafka.topic_prefix}releaser",
        "transaction.timeout.ms": settings.transaction_timeout_ms,
    }
    publisher = KafkaRingPublisher(lambda: Producer(producer_config), topics, Codecs.build(kafka))
    consumer_conf: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": f"{kafka.topic_prefix}releaser",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 5),
        "max.poll.interval.ms": 600_000,
        "enable.auto.commit": False,
        # The current leader keeps the lease when a replica (re)joins: no needless handover.
        "partition.assignment.strategy": "cooperative-sticky",
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
        publisher=publisher,
        writers=writers,
        metrics=metrics,
        initial_backfill_ms=settings.initial_backfill_ms,
        tick_budget_ms=settings.tick_budget_ms,
    )
    reconciler = Reconciler(
        buckets,
        partial(describe_groups_in_child, kafka),
        writer_groups(kafka, settings.bucketer_group_id),
    )
    index_checked_at: float | None = None

    def reconcile_the_index() -> None:
        """Upgrades and rollbacks: no skipping while a writer of the previous version runs; a
        backfill once none does (scheduler.store.bucket_index)."""
        nonlocal index_checked_at
        now = clock.monotonic_ms()
        if (
            index_checked_at is not None
            and now - index_checked_at < settings.index_check_interval_ms
        ):
            return
        index_checked_at = now
        try:
            reconciler.check(clock.now_ms())
        except Exception:
            log.exception("bucket index backfill failed; walking every bucket meanwhile")

    loop = ReleaseLoop(
        leadership=leadership,
        publisher=publisher,
        releaser=releaser,
        health=health,
        clock=clock,
        metrics=metrics,
        session_timeout_ms=settings.session_timeout_ms,
        tick_s=settings.tick_ms / 1000,
        before_tick=reconcile_the_index,
        after_tick=None if pending is None else pending.maybe_refresh,
        stop=stop,
    )
    occurrences: threading.Thread | None = None
    if schedules is not None and usage is not None and occurrence_metrics is not None:
        producer = KafkaRecordProducer(kafka.client_config())
        request_codec, command_codec = topic_codecs(kafka, topics)
        runner = OccurrenceRunner(
            schedules=schedules,
            messages=messages,
            usage=usage,
            producer=producer,
            requests=request_codec,
            commands=command_codec,
            topics=topics,
            scheduling=scheduling,
            clock=clock,
            metrics=occurrence_metrics,
            lookahead_ms=settings.schedule_lookahead_ms,
            limit=settings.schedule_limit,
            rescan_ms=settings.schedule_rescan_ms,
        )
        occurrences = threading.Thread(
            target=run_while_leading,
            args=(
                runner,
                lambda: leadership.is_leader,
                stop,
                settings.schedule_tick_ms / 1000,
                occurrence_metrics.failures,
            ),
            name="occurrences",
            daemon=True,
        )
        occurrences.start()
    try:
        while not stop.is_set():
            loop.step()
    finally:
        if occurrences is not None:
            stop.set()  # also when the loop failed: the thread finishes its tick and ends
            occurrences.join()
            producer.close()
        consumer.close()  # leaves the group: another replica takes over at once
        writers.shutdown(wait=True)
        publisher.close()
