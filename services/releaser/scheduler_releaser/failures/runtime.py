"""The failure notifier's Kafka side: the dead-letter consumer, the commits, the clients.

    loop:    read what the consumer holds (non-blocking; paused above `max_pending`) ->
             add() each dead letter -> start due notices -> every `commit_interval_ms`:
             commit the finished prefix of each partition (asynchronously), report pending
             and lag (from the high offsets of the last fetch: no request) -> sleep a tick
    group:   `<prefix>failure-notifier`, read_committed: a dead letter is seen only once the
             dispatcher's transaction that wrote it (with the FAILED result) committed. Every
             dispatcher instance's notifier joins it; the dead-letter partitions are split
             between them (one partition by default: one active notifier, the others take over
             when it goes). A partition taken away abandons its unfinished notices to the next
             owner, after committing what was finished.
    stop:    nothing new starts; notices in flight get `shutdown_timeout_ms`; the finished
             prefix is committed (synchronously); the rest is read again after the restart.

`run_notifier` builds the real clients; `NotifierLoop` takes any consumer with the calls used
here (unit tests drive it with a fake and a ManualClock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from scheduler.clock import Clock
from scheduler.codec import DecodeError, RecordCodec
from scheduler.records import DeadLetter
from scheduler.settings import KafkaSettings
from scheduler.store.ports import AppLookup
from scheduler_releaser.dispatcher.apps import AppCache
from scheduler_releaser.dispatcher.feeds import consumer_config
from scheduler_releaser.dispatcher.http_post import AiohttpPost
from scheduler_releaser.dispatcher.outbound import OutboundGuard
from scheduler_releaser.settings import DispatchSettings, FailureNoticeSettings

from .notifier import FailureNotifier, NoticeEvents
from .offsets import TP
from .senders import HttpNoticeSender, KafkaNoticeSender, KafkaPoller

log = logging.getLogger(__name__)
IDLE_S = 0.2  # a tick when nothing was read (notices are not due to the millisecond)
READ_BATCH = 500
STOP_POLL_S = 0.01  # how often a stop looks at the notices in flight
SESSION_TIMEOUT_MS = 10_000  # a static member gone for good: its partitions move after this


class NoticeConsumer(Protocol):
    """The calls of a confluent-kafka Consumer the loop makes."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...

    def commit(self, *args: Any, **kwargs: Any) -> Any: ...

    def assignment(self) -> list[TopicPartition]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int] | None: ...


class NotifierLoop:
    def __init__(
        self,
        consumer: NoticeConsumer,
        notifier: FailureNotifier,
        codec: RecordCodec[DeadLetter],
        clock: Clock,
        settings: FailureNoticeSettings,
        events: NoticeEvents,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._consumer = consumer
        self.notifier = notifier
        self._codec = codec
        self._clock = clock
        self._settings = settings
        self._events = events
        self._sleep = sleep
        self._paused = False
        self._last_commit = clock.monotonic_ms()

    # -- the consumer's callbacks (served inside consume(), on this thread) ---------------

    def on_assign(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        log.info("failure notifier assigned %s", _names(partitions))
        self._paused = False  # a new assignment starts resumed

    def on_revoke(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Commit what is finished, then abandon the rest to the next owner."""
        tps = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(sync=True, only=tps)
        abandoned = self.notifier.revoke(tps)
        log.info(
            "failure notifier revoked %s (%d unfinished notices left to the next owner)",
            _names(partitions),
            abandoned,
        )

    def on_lost(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Taken away without a revoke (the session expired): nothing can be committed."""
        abandoned = self.notifier.revoke({(tp.topic, tp.partition) for tp in partitions})
        log.warning(
            "failure notifier lost %s (%d unfinished notices left to the next owner)",
            _names(partitions),
            abandoned,
        )

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The result of an asynchronous commit: confirmed, or committed again next time."""
        if error is not None:
            log.warning("failure notifier commit failed: %s", error)
            return
        self.notifier.offsets.confirm(
            {(tp.topic, tp.partition): tp.offset for tp in partitions if tp.error is None}
        )

    # -- the loop -------------------------------------------------------------------------

    async def run(self, should_stop: Callable[[], bool]) -> None:
        try:
            while not should_stop():
                read = self.step()
                await self._sleep(0 if read else IDLE_S)
        finally:
            await self.shutdown()

    def step(self) -> int:
        """One pass: read what is there, start what is due, commit on schedule."""
        self._pause_or_resume()
        messages = self._consumer.consume(READ_BATCH, 0)
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("dead-letter consumer error: %s", error)
                continue
            tp = (msg.topic(), msg.partition())
            try:
                letter: DeadLetter | None = self._codec.decode(msg.value() or b"")
            except DecodeError:
                log.warning("undecodable dead letter at %s offset %s: skipped", tp, msg.offset())
                letter = None
            self.notifier.add(letter, tp, msg.offset())
        self.notifier.start_due()
        now = self._clock.monotonic_ms()
        if now - self._last_commit >= self._settings.commit_interval_ms:
            self._last_commit = now
            self._commit(sync=False)
            self._events.pending(self.notifier.pending)
            self._events.lag(self.lag())
        return len(messages)

    def _pause_or_resume(self) -> None:
        """Above `max_pending` unfinished notices, stop reading (the consumer is still polled:
        it stays in the group); below it, read again."""
        full = self.notifier.pending >= self._settings.max_pending
        if full == self._paused:
            return
        assignment = self._consumer.assignment()
        if full:
            self._consumer.pause(assignment)
            log.warning(
                "%d failure notices unfinished: reading the dead letters pauses",
                self.notifier.pending,
            )
        else:
            self._consumer.resume(assignment)
        self._paused = full

    def _commit(self, sync: bool, only: set[TP] | None = None) -> None:
        offsets = self.notifier.offsets
        assigned = [
            tp
            for tp in self._consumer.assignment()
            if only is None or (tp.topic, tp.partition) in only
        ]
        # Past the transaction markers too, when nothing is unfinished there: the lag reads 0.
        with contextlib.suppress(KafkaException):
            for tp in self._consumer.position(assigned):
                if tp.offset >= 0:
                    offsets.passed((tp.topic, tp.partition), tp.offset)
        commits = {
            tp: offset for tp, offset in offsets.commits().items() if only is None or tp in only
        }
        if not commits:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in commits.items()]
        try:
            if sync:
                self._consumer.commit(offsets=tps, asynchronous=False)
                offsets.confirm(commits)
            else:
                self._consumer.commit(offsets=tps, asynchronous=True)  # on_commit confirms
        except KafkaException as exc:
            log.warning("failure notifier commit failed: %s (committed again later)", exc)

    def lag(self) -> int:
        """Dead letters after the committed point (or the read position), on the partitions
        held now. The high offsets are those of the last fetch (no request)."""
        total = 0
        for tp in self._consumer.assignment():
            try:
                marks = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if marks is None or marks[1] < 0:
                continue
            point = self.notifier.offsets.restart_point((tp.topic, tp.partition))
            if point is None:
                continue
            total += max(0, marks[1] - point)
        return total

    async def shutdown(self) -> None:
        notifier = self.notifier
        notifier.stopping = True
        log.info("failure notifier stopping: %d notices in flight", notifier.in_flight)
        deadline = self._clock.monotonic_ms() + self._settings.shutdown_timeout_ms
        while notifier.in_flight and self._clock.monotonic_ms() < deadline:
            await self._sleep(STOP_POLL_S)
        if notifier.in_flight:
            left = notifier.cancel_in_flight()
            log.warning(
                "failure notifier stopped with %d notices in flight: they are sent again after"
                " the restart",
                left,
            )
            await notifier.drain()
        self._commit(sync=True)
        self._events.pending(notifier.pending)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


async def run_notifier(
    *,
    kafka: KafkaSettings,
    dead_letter_topic: str,
    codec: RecordCodec[DeadLetter],
    dispatch: DispatchSettings,
    settings: FailureNoticeSettings,
    apps: AppLookup,
    clock: Clock,
    events: NoticeEvents,
    should_stop: Callable[[], bool],
    member: str | None = None,
) -> None:
    """The notifier on real clients until `should_stop()`. `member`: a static group member id
    (one per dispatcher instance): a restarted notifier takes its partitions back at once."""
    # librdkafka's fetch wait (500 ms): a long poll is answered as soon as a notice arrives;
    # a shorter wait only adds fetches against the broker while idle.
    extra: dict[str, object] = {}
    if member is not None:
        extra |= {"group.instance.id": member, "session.timeout.ms": SESSION_TIMEOUT_MS}
    timeout_ms = settings.timeout_ms
    producer = Producer(
        {
            **kafka.client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # A failure topic that does not exist is not created by us (retried, then dropped).
            "allow.auto.create.topics": False,
            "message.timeout.ms": timeout_ms,
            "topic.metadata.propagation.max.ms": min(2_000, timeout_ms),
        }
    )
    poller = KafkaPoller(producer)
    http = AiohttpPost(settings.concurrency, timeout_ms / 1000)
    notifier = FailureNotifier(
        apps=AppCache(apps, clock),
        http=HttpNoticeSender(http, OutboundGuard(dispatch.allow_private_destinations), clock),
        kafka=KafkaNoticeSender(
            producer, kafka.topic_prefix, dispatch.kafka_destination_prefixes, timeout_ms
        ),
        clock=clock,
        settings=settings,
        events=events,
    )
    loop: NotifierLoop | None = None

    def on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if loop is not None:
            loop.on_commit(error, partitions)

    consumer = Consumer(
        consumer_config(
            kafka, f"{kafka.topic_prefix}failure-notifier", on_commit=on_commit, **extra
        )
    )
    loop = NotifierLoop(consumer, notifier, codec, clock, settings, events)
    consumer.subscribe(
        [dead_letter_topic],
        on_assign=loop.on_assign,
        on_revoke=loop.on_revoke,
        on_lost=loop.on_lost,
    )
    poller.start()
    log.info("failure notifier started on %s", dead_letter_topic)
    try:
        await loop.run(should_stop)
    finally:
        consumer.close()
        await http.close()
        with contextlib.suppress(KafkaException):
            producer.flush(5)
        poller.stop()
        log.info("failure notifier stopped")
