"""Kafka inputs of the dispatcher: the ring, the commands view and the results reload.

All confluent-kafka consumer calls happen on the event-loop thread with timeout 0 (never
blocking it), except the startup reads, which run before firing begins.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from scheduler.clock import Clock
from scheduler.codec import DecodeError
from scheduler.records import RejectedRequest
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics

from .codecs import Codecs
from .commands import CommandView
from .dispatcher import Dispatcher
from .metrics import DispatchMetrics
from .offsets import OffsetTracker
from .ports import OutRecord, Sink
from .settings import DispatchSettings
from .timers import Position, TimerQueue

log = logging.getLogger(__name__)
TIMEOUT_S = 30.0


def consumer_config(kafka: KafkaSettings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        **extra,
    }


def start_offsets(consumer: Consumer, tps: list[TopicPartition], since_ms: int) -> None:
    """Set each partition's offset to the first record at or after `since_ms` (else the end)."""
    if not tps:  # librdkafka refuses an empty query (_INVALID_ARG): a restart with every
        return  # ring partition committed has nothing to look up
    query = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in tps]
    found = {
        (tp.topic, tp.partition): tp.offset for tp in consumer.offsets_for_times(query, TIMEOUT_S)
    }
    for tp in tps:
        offset = found.get((tp.topic, tp.partition), -1)
        tp.offset = offset if offset >= 0 else OFFSET_END


def future_slots(scheduling: SchedulingSettings) -> int:
    """How many slots ahead of the current one may hold not-yet-due records (see README)."""
    span = scheduling.lookahead_ms + scheduling.placement_margin_ms + scheduling.bucket_width_ms
    return min(scheduling.ring_size - 1, math.ceil(span / scheduling.ring_slot_ms) + 1)


def paused_slots(current_slot: int, scheduling: SchedulingSettings) -> set[int]:
    """Decision 4: the current and next slots are consumed; so are the slots behind (records
    there are late: after an outage, or written late); the future ones stay in Kafka."""
    size = scheduling.ring_size
    return {(current_slot + k) % size for k in range(2, future_slots(scheduling) + 1)}


class RingFeed:
    def __init__(
        self,
        consumer: Consumer,
        *,
        topics: Topics,
        scheduling: SchedulingSettings,
        settings: DispatchSettings,
        clock: Clock,
        tracker: OffsetTracker,
        dispatcher: Dispatcher,
        codecs: Codecs,
        sink: Sink,
        metrics: DispatchMetrics,
    ) -> None:
        self._consumer = consumer
        self._topics = topics
        self._scheduling = scheduling
        self._settings = settings
        self._clock = clock
        self._tracker = tracker
        self._dispatcher = dispatcher
        self._codecs = codecs
        self._sink = sink
        self._metrics = metrics
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._paused: set[tuple[str, int]] = set()
        self._draining: set[tuple[str, int]] = set()
        self._slot: int | None = None
        self._last_drain_check = 0

    @property
    def cycle_ms(self) -> int:
        return self._topics.ring.cycle_ms

    def my_partitions(self) -> list[TopicPartition]:
        metadata = self._consumer.list_topics(timeout=TIMEOUT_S).topics
        mine: list[TopicPartition] = []
        for topic in self._topics.ring.topics():
            if topic not in metadata:
                raise RuntimeError(f"ring topic {topic} is missing: run `scheduler setup`")
            for partition in sorted(metadata[topic].partitions):
                if partition % self._settings.instances == self._settings.instance:
                    mine.append(TopicPartition(topic, partition))
        return mine

    def start(self, now_ms: int) -> int:
        """Assign the ring partitions of this instance at their committed offsets.

        Returns the instant from which delivery results matter (from the commit metadata).
        """
        tps = self.my_partitions()
        committed = self._consumer.committed(tps, timeout=TIMEOUT_S)
        fresh = [tp for tp in committed if tp.offset < 0]
        # A partition never committed by this group: start one ring cycle back, not at the
        # beginning of its retention (older records were settled by a previous deployment).
        start_offsets(self._consumer, fresh, now_ms - self._topics.ring.cycle_ms)
        for tp in fresh:
            if tp.offset == OFFSET_END:
                _, tp.offset = self._consumer.get_watermark_offsets(tp, TIMEOUT_S, cached=False)
            # Committed with the first transaction: a restart must find every partition at an
            # offset, or records older than one cycle behind a never-committed partition's
            # start (possible when a restart takes long) would be skipped.
            self._tracker.start_at(tp.topic, tp.partition, tp.offset)
        since = now_ms
        for tp in committed:
            if tp.offset >= 0 and tp.metadata and tp.metadata.isdigit():
                since = min(since, int(tp.metadata))
        self._tps = {(tp.topic, tp.partition): tp for tp in committed}
        log.info(
            "ring partitions: %d at their committed offsets, %d fresh; results matter since %d",
            len(committed) - len(fresh),
            len(fresh),
            since,
        )
        self._consumer.assign(committed)
        self._paused = set()
        self._slot = None
        self.rotate(now_ms)
        return since

    def rotate(self, now_ms: int) -> None:
        """At each slot boundary: resume the new next slot, pause the slot that becomes future."""
        slot = self._topics.ring.slot_of(now_ms)
        due_check = now_ms - self._last_drain_check >= 1_000 and bool(self._draining)
        if slot == self._slot and not due_check:
            return
        self._slot = slot
        self._last_drain_check = now_ms
        topics = {self._topics.ring.topic_for_slot(s) for s in paused_slots(slot, self._scheduling)}
        want = {key for key in self._tps if key[0] in topics}
        to_resume = [self._tps[k] for k in self._paused - want]
        to_pause: list[TopicPartition] = []
        for key in want - self._paused:
            if self._has_backlog(key):
                self._draining.add(key)  # late records still to read before it goes quiet
            else:
                self._draining.discard(key)
                to_pause.append(self._tps[key])
        if to_resume:
            self._consumer.resume(to_resume)
        if to_pause:
            self._consumer.pause(to_pause)
        self._paused = (self._paused & want) | {(tp.topic, tp.partition) for tp in to_pause}

    def _has_backlog(self, key: tuple[str, int]) -> bool:
        """Unread records before the high watermark? Before the first fetch the position is
        unknown: the assigned (committed) offset stands in, so late records left in a slot by
        a long outage are drained rather than paused until the ring comes round."""
        tp = TopicPartition(*key)
        try:
            _, high = self._consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
        except KafkaException as exc:
            # Kafka unreachable (a broker restart): unknown counts as a backlog, so the slot
            # stays resumed and is checked again within a second; pausing it could strand late
            # records, and raising here stopped the whole dispatcher.
            log.warning("ring watermark of %s/%d unknown (%s): kept resumed", *key, exc)
            return True
        [position] = self._consumer.position([tp])
        offset = position.offset if position.offset >= 0 else self._tps[key].offset
        return 0 <= offset < high

    def poll(self, limit: int = 500) -> int:
        if len(self._dispatcher.timers) >= self._settings.max_held:
            return 0  # backpressure: librdkafka stops fetching once its queue is full
        messages = self._consumer.consume(num_messages=limit, timeout=0)
        now = self._clock.now_ms()
        for msg in messages:
            self._handle(msg, now)
        self._metrics.ring_lag.set(self._tracker.unsettled())
        return len(messages)

    def _handle(self, msg: Message, now_ms: int) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("ring consumer error: %s", error)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        position = Position(topic, partition, offset)
        self._tracker.received(topic, partition, offset, now_ms)
        value = msg.value() or b""
        try:
            due = self._codecs.due.decode(value)
        except DecodeError as exc:
            self._metrics.rejected.inc()
            rejected = RejectedRequest(
                reason="undecodable_due_message",
                detail=str(exc)[:1000],
                original=value,
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
                rejected_ms=now_ms,
            )
            out = OutRecord(self._topics.rejected, self._codecs.rejected.encode(rejected))
            self._sink.emit([out], position)
            return
        self._dispatcher.accept(due, position)


class CommandsFeed:
    """Every dispatcher instance reads every commands partition (no group, no commits)."""

    def __init__(
        self, consumer: Consumer, topic: str, view: CommandView, codecs: Codecs, clock: Clock
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self.view = view
        self._codecs = codecs
        self._clock = clock

    def start(self, since_ms: int) -> None:
        metadata = self._consumer.list_topics(self._topic, timeout=TIMEOUT_S).topics[self._topic]
        tps = [TopicPartition(self._topic, p) for p in sorted(metadata.partitions)]
        start_offsets(self._consumer, tps, since_ms)
        self._consumer.assign(tps)

    def poll(self, limit: int = 500) -> int:
        messages = self._consumer.consume(num_messages=limit, timeout=0)
        now = self._clock.now_ms()
        for msg in messages:
            partition = msg.partition() or 0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self.view.reached_end(partition, now)
                else:
                    log.warning("commands consumer error: %s", error)
                continue
            try:
                command = self._codecs.command.decode(msg.value() or b"")
            except DecodeError:
                log.warning("undecodable command at %s/%s", partition, msg.offset())
                command = None
            self.view.apply(partition, command, now)
        return len(messages)

    def catch_up(self, timeout_ms: int) -> bool:
        deadline = self._clock.monotonic_ms() + timeout_ms
        while not self.view.caught_up() and self._clock.monotonic_ms() < deadline:
            if not self.poll():
                threading.Event().wait(0.01)
        return self.view.caught_up()


def load_results(
    consumer: Consumer, topic: str, since_ms: int, timers: TimerQueue, codecs: Codecs
) -> int:
    """Decision 6: before firing, remember every attempt settled since `since_ms` (read to the
    end, read_committed), so a re-read ring record of a settled attempt is not fired again."""
    metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
    tps = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    start_offsets(consumer, tps, since_ms)
    ends = {}
    for tp in tps:
        _, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
        ends[tp.partition] = high
    active = {tp.partition for tp in tps if tp.offset != OFFSET_END and ends[tp.partition] > 0}
    consumer.assign([tp for tp in tps if tp.partition in active])
    loaded = 0
    while active:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            partition = msg.partition() or 0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    active.discard(partition)
                continue
            try:
                result = codecs.result.decode(msg.value() or b"")
            except DecodeError:
                continue
            key = (result.message_id, result.generation, result.attempt)
            timers.remember(key, result.due_ms)
            loaded += 1
            if (msg.offset() or 0) + 1 >= ends[partition]:
                active.discard(partition)
    consumer.unassign()
    return loaded
