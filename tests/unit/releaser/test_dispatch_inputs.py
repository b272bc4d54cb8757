"""The dispatcher's inputs against an in-memory Kafka (fake_kafka.py) and a manual clock: ring
partitions that never skip a record whatever their history, slots re-checked after a freeze,
the commands view sized from metadata, fresh per partition and never blind, and no blocking
Kafka call on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

import pytest
from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.records import Command, CommandKind, DueMessage
from scheduler_releaser.dispatcher.commands import CommandView
from scheduler_releaser.dispatcher.feeds import (
    CommandsFeed,
    Headers,
    RingFeed,
    parked_uncounted_ms,
    paused_slots,
)
from scheduler_releaser.dispatcher.offsets import OffsetTracker
from scheduler_releaser.dispatcher.ports import OutRecord
from scheduler_releaser.dispatcher.timers import PARKED_HEADER, Position, TimerQueue
from scheduler_releaser.metrics import DispatchMetrics
from scheduler_releaser.settings import DispatchSettings

from .fake_kafka import FakeConsumer, FakeKafka, FakeTransactionalProducer
from .harness import CODECS, SCHEDULING, TOPICS

pytestmark = pytest.mark.unit

RING = TOPICS.ring
CYCLE = RING.cycle_ms
SETTINGS = DispatchSettings(metadata_refresh_ms=5_000, commands_confirm_ms=100)


class Accepting:
    """The dispatcher as the ring feed sees it: accept() and the held count."""

    def __init__(self) -> None:
        self.timers = TimerQueue()
        self.accepted: list[str] = []
        self.repartitioned = 0

    def ring_repartitioned(self) -> None:
        self.repartitioned += 1

    def accept(
        self, message: DueMessage, position: Position | None, parked: int | None = None
    ) -> None:
        self.accepted.append(message.message_id)


class NoSink:
    def emit(self, records: list[OutRecord], settled: Position | None, *a: object, **k: object):
        raise AssertionError("nothing undecodable in these tests")


def due(message_id: str, due_ms: int) -> bytes:
    return CODECS.due.encode(
        DueMessage(
            message_id=message_id,
            app_id="app",
            generation=0,
            attempt=1,
            due_ms=due_ms,
            send_at_ms=due_ms,
            created_ms=due_ms - 1,
            payload_json="{}",
        )
    )


def ring_world(partitions: int = 1) -> tuple[FakeKafka, ManualClock]:
    kafka = FakeKafka()
    for topic in RING.topics():
        kafka.create(topic, partitions)
    return kafka, ManualClock()


def ring_feed(
    kafka: FakeKafka, clock: ManualClock, settings: DispatchSettings = SETTINGS
) -> tuple[RingFeed, FakeConsumer, Accepting, OffsetTracker]:
    consumer = FakeConsumer(kafka, "sched.dispatcher")
    dispatcher = Accepting()
    tracker = OffsetTracker()
    feed = RingFeed(
        consumer,  # type: ignore[arg-type]
        topics=TOPICS,
        scheduling=SCHEDULING,
        settings=settings,
        clock=clock,
        tracker=tracker,
        dispatcher=dispatcher,  # type: ignore[arg-type]
        codecs=CODECS,
        sink=NoSink(),  # type: ignore[arg-type]
        metrics=DispatchMetrics(CollectorRegistry()),
        asker=FakeConsumer(kafka, "sched.dispatcher"),  # type: ignore[arg-type]
    )
    return feed, consumer, dispatcher, tracker


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def settle_probe(feed: RingFeed, clock: ManualClock) -> None:
    """Loop turns: rotate, probe (its worker thread finishes; the next turn applies its
    answer), poll."""
    feed.rotate(clock.now_ms())
    feed.probe(clock.now_ms())
    while feed._probe is not None:
        await asyncio.sleep(0.001)
    feed.probe(clock.now_ms())
    feed.poll()


async def listed(feed: RingFeed, clock: ManualClock) -> None:
    """A loop turn's refresh, its listing task finished (if one was due), and the next turn's
    refresh, which assigns what it found."""
    feed.refresh(clock.now_ms())
    while feed._listing is not None:
        await asyncio.sleep(0.001)
    feed.refresh(clock.now_ms())


def future_topic(now_ms: int) -> str:
    return RING.topic_for_slot(min(paused_slots(RING.slot_of(now_ms), SCHEDULING)))


# -- bad input never blocks a partition ---------------------------------------------------------


class RecordingSink:
    def __init__(self) -> None:
        self.emitted: list[tuple[list[OutRecord], Position | None]] = []

    def emit(self, records: list[OutRecord], settled: Position | None, *a: object, **k: object):
        self.emitted.append((records, settled))


def test_an_undecodable_ring_record_is_rejected_with_its_position_and_the_rest_is_read() -> None:
    kafka, clock = ring_world()
    topic = RING.topic_for(clock.now_ms())
    kafka.produce(topic, 0, due("m-before", clock.now_ms()), timestamp_ms=clock.now_ms())
    kafka.produce(topic, 0, b"\x00 not a due message", timestamp_ms=clock.now_ms())
    kafka.produce(topic, 0, due("m-after", clock.now_ms()), timestamp_ms=clock.now_ms())
    feed, _, dispatcher, _ = ring_feed(kafka, clock)
    sink = RecordingSink()
    feed._sink = sink  # type: ignore[assignment]
    feed.start(clock.now_ms(), slack_ms=0)
    feed.poll()
    assert dispatcher.accepted == ["m-before", "m-after"]
    [(records, settled)] = sink.emitted
    assert settled == Position(topic, 0, 1)  # its offset is settled: the partition goes on
    [out] = records
    assert out.topic == TOPICS.rejected
    rejected = CODECS.rejected.decode(out.value)
    assert (rejected.reason, rejected.source_topic, rejected.source_offset) == (
        "undecodable_due_message",
        topic,
        1,
    )
    assert rejected.original == b"\x00 not a due message"


# -- ring partitions without a usable committed offset ---------------------------------------


def test_a_never_committed_partition_is_read_from_its_first_record_however_old() -> None:
    """Records produced two cycles ago to a group that never committed (a first deployment whose
    dispatcher crash-looped, or offsets expired after a week idle). The previous release started
    such a partition one cycle back and skipped them."""
    kafka, clock = ring_world()
    old = clock.now_ms() - 2 * CYCLE
    current = RING.topic_for(clock.now_ms())
    kafka.produce(current, 0, due("m-current", old), timestamp_ms=old)
    kafka.produce(future_topic(clock.now_ms()), 0, due("m-future", old), timestamp_ms=old)
    feed, _, dispatcher, _ = ring_feed(kafka, clock)

    async def body() -> None:
        feed.start(clock.now_ms(), slack_ms=0)
        feed.poll()
        await settle_probe(feed, clock)

    run(body())
    assert sorted(dispatcher.accepted) == ["m-current", "m-future"]


def test_a_committed_partition_starts_at_its_offset_and_the_floor_is_its_metadata() -> None:
    kafka, clock = ring_world()
    topic = RING.topic_for(clock.now_ms())
    for i in range(3):
        kafka.produce(topic, 0, due(f"m{i}", clock.now_ms()), timestamp_ms=clock.now_ms())
    kafka.commit("sched.dispatcher", topic, 0, 1, str(clock.now_ms() - 70_000))
    feed, _, dispatcher, tracker = ring_feed(kafka, clock)
    since = feed.start(clock.now_ms(), slack_ms=10_000)
    feed.poll()
    assert since == clock.now_ms() - 80_000
    assert dispatcher.accepted == ["m1", "m2"]
    commits = tracker.take_commits(clock.now_ms())
    assert commits[(topic, 0)] == (1, clock.now_ms() - 70_000)  # floor until read past 3


def test_ring_partitions_added_while_running_are_found_and_read_from_their_start() -> None:
    kafka, clock = ring_world(partitions=1)
    feed, _, dispatcher, _ = ring_feed(kafka, clock)
    topic = RING.topic_for(clock.now_ms())

    async def body() -> None:
        feed.start(clock.now_ms(), slack_ms=0)
        kafka.add_partitions(topic, 2)
        kafka.produce(topic, 1, due("m-new", clock.now_ms()), timestamp_ms=clock.now_ms())
        await listed(feed, clock)  # too soon: the listing is not due yet
        feed.poll()
        assert dispatcher.accepted == []
        clock.advance(SETTINGS.metadata_refresh_ms)
        await listed(feed, clock)
        feed.poll()

    run(body())
    assert dispatcher.accepted == ["m-new"]
    assert feed.partitions == RING.size + 1
    # Keys now map to other partitions: the dispatcher is told (it reads every record again).
    assert dispatcher.repartitioned == 1


def test_a_listing_with_the_same_partitions_is_not_a_repartition() -> None:
    kafka, clock = ring_world(partitions=2)
    feed, _, dispatcher, _ = ring_feed(kafka, clock)

    async def body() -> None:
        feed.start(clock.now_ms(), slack_ms=0)
        for _ in range(3):
            clock.advance(SETTINGS.metadata_refresh_ms)
            await listed(feed, clock)

    run(body())
    assert dispatcher.repartitioned == 0


def test_only_owned_partitions_are_assigned() -> None:
    kafka, clock = ring_world(partitions=6)
    settings = DispatchSettings(instance=1, instances=3)
    feed, consumer, _, _ = ring_feed(kafka, clock, settings)
    feed.start(clock.now_ms(), slack_ms=0)
    assert {p for _, p in consumer.assigned} == {1, 4}


# -- slots re-checked after a freeze ---------------------------------------------------------


def test_a_dispatcher_frozen_for_a_whole_cycle_drains_the_paused_slots_at_once() -> None:
    """Frozen (SIGSTOP, a VM pause) for exactly one cycle: the slot index is unchanged, but
    records that came due meanwhile sit in slots that were paused as future. The previous
    release saw an unchanged slot and left them paused until their slot came round again."""
    kafka, clock = ring_world()
    feed, consumer, dispatcher, _ = ring_feed(kafka, clock)
    topic = future_topic(clock.now_ms())

    async def body() -> None:
        feed.start(clock.now_ms(), slack_ms=0)
        await settle_probe(feed, clock)
        assert (topic, 0) in consumer.paused
        # written while the process was frozen, due during the freeze
        kafka.produce(topic, 0, due("m-overdue", clock.now_ms() + 5_000), clock.now_ms())
        clock.advance(CYCLE)
        await settle_probe(feed, clock)
        await settle_probe(feed, clock)

    run(body())
    assert dispatcher.accepted == ["m-overdue"]  # read, then the slot is paused again


def test_a_future_slot_with_nothing_unread_is_paused_and_one_with_late_records_is_drained() -> None:
    kafka, clock = ring_world()
    feed, consumer, dispatcher, _ = ring_feed(kafka, clock)

    async def body() -> None:
        feed.start(clock.now_ms(), slack_ms=0)
        await settle_probe(feed, clock)
        future = {
            RING.topic_for_slot(s) for s in paused_slots(RING.slot_of(clock.now_ms()), SCHEDULING)
        }
        assert {t for t, _ in consumer.paused} == future
        # the next slot boundary: one more slot becomes future; a late record sits in it
        nxt = RING.slot_of(clock.now_ms() + RING.slot_ms)
        becoming = RING.topic_for_slot(
            max(paused_slots(nxt, SCHEDULING), key=lambda s: (s - nxt) % RING.size)
        )
        kafka.produce(becoming, 0, due("m-late", clock.now_ms() - 1), clock.now_ms())
        clock.advance(RING.slot_ms)
        feed.rotate(clock.now_ms())
        assert (becoming, 0) not in consumer.paused  # draining until a probe says it is empty
        await settle_probe(feed, clock)
        await settle_probe(feed, clock)
        assert (becoming, 0) in consumer.paused

    run(body())
    assert dispatcher.accepted == ["m-late"]


def test_a_probe_that_fails_while_kafka_is_down_keeps_the_slot_draining() -> None:
    kafka, clock = ring_world()
    feed, consumer, _, _ = ring_feed(kafka, clock)
    topic = future_topic(clock.now_ms())
    kafka.produce(topic, 0, due("m", clock.now_ms()), clock.now_ms())

    def down(*args: object, **kwargs: object) -> None:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    async def body() -> None:
        feed.start(clock.now_ms(), slack_ms=0)
        consumer.stalled = True  # nothing read: the record stays unread
        consumer.offsets_for_times = down  # type: ignore[method-assign]
        clock.advance(CYCLE)
        await settle_probe(feed, clock)
        assert (topic, 0) not in consumer.paused

    run(body())


# -- no blocking Kafka call on the event loop ------------------------------------------------


class BlockingConsumer(FakeConsumer):
    """Blocking calls wait for `release` and note the thread they ran on."""

    def __init__(self, kafka: FakeKafka, group: str, **kw: bool) -> None:
        super().__init__(kafka, group, **kw)
        self.release = threading.Event()
        self.release.set()
        self.threads: list[str] = []

    def _block(self) -> None:
        self.threads.append(threading.current_thread().name)
        assert self.release.wait(5)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self._block()
        return super().list_topics(topic, timeout)

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float = -1) -> Any:
        self._block()
        return super().offsets_for_times(tps, timeout)

    def committed(self, tps: list[TopicPartition], timeout: float = -1) -> Any:
        self._block()
        return super().committed(tps, timeout)


def test_no_kafka_call_that_can_block_runs_on_the_event_loop() -> None:
    """A broker outage used to freeze the loop: get_watermark_offsets (timeout 5 s) per draining
    partition each second, on the loop thread, while the commands view claimed to be fresh."""
    kafka, clock = ring_world(partitions=1)
    kafka.create(TOPICS.commands, 2)
    ring = BlockingConsumer(kafka, "sched.dispatcher")
    commands_consumer = BlockingConsumer(kafka, "sched.dispatcher-commands")
    feed, *_ = ring_feed(kafka, clock)
    feed._asker = ring  # type: ignore[assignment]
    view = CommandView(clock.now_ms())
    commands = CommandsFeed(commands_consumer, TOPICS.commands, view, CODECS, clock, 100)  # type: ignore[arg-type]
    feed.start(clock.now_ms(), slack_ms=0)  # startup: blocking calls are fine before firing
    commands.start(clock.now_ms())
    ring.threads.clear()
    commands_consumer.threads.clear()
    loop_thread = threading.current_thread().name

    async def body() -> None:
        ring.release.clear()
        commands_consumer.release.clear()  # Kafka stops answering
        stop = asyncio.Event()
        confirmer = asyncio.create_task(commands.confirm(stop))
        clock.advance(CYCLE)  # a jump: every future slot probed again
        turn = asyncio.get_running_loop().time()
        for _ in range(5):
            commands.poll()
            feed.rotate(clock.now_ms())
            feed.probe(clock.now_ms())
            clock.advance(SETTINGS.metadata_refresh_ms)
            feed.refresh(clock.now_ms())
            feed.poll()
            await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - turn < 1.0  # the loop kept turning
        assert view.lag_ms(clock.now_ms()) > SCHEDULING.cancel_guard_ms  # and the view ages
        ring.release.set()
        commands_consumer.release.set()
        stop.set()
        await confirmer
        while feed._probe is not None or feed._listing is not None:
            await asyncio.sleep(0.001)

    run(body())
    assert ring.threads and commands_consumer.threads
    assert loop_thread not in ring.threads + commands_consumer.threads


class ThreadNotingConsumer(FakeConsumer):
    """Notes the thread of every call that confluent-kafka serializes on one consumer."""

    def __init__(self, kafka: FakeKafka, group: str) -> None:
        super().__init__(kafka, group)
        self.off_loop: list[str] = []
        self._loop_thread = threading.current_thread().name

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("_") and name != "off_loop":
            thread = threading.current_thread().name
            if thread != super().__getattribute__("_loop_thread"):
                super().__getattribute__("off_loop").append(f"{name} in {thread}")
        return attr


def test_the_ring_consumer_is_asked_nothing_from_worker_threads() -> None:
    """confluent-kafka lets one call at a time into a consumer (measured: position, pause,
    resume and consume(timeout=0) wait out a consume running in another thread), and a question
    on the ring consumer's connection waits behind its long-polled fetch. A probe's end offsets
    asked there held the loop's next poll for the fetch wait at every slot start: the messages
    due in its first 100 ms were all delivered about 100 ms after it began. The questions go
    through a client of their own; the loop alone calls the ring consumer."""
    kafka, clock = ring_world(partitions=2)
    feed, *_ = ring_feed(kafka, clock)
    ring = ThreadNotingConsumer(kafka, "sched.dispatcher")
    feed._consumer = ring  # type: ignore[assignment]
    feed.start(clock.now_ms(), slack_ms=0)  # startup, before firing: no loop to hold yet
    ring.off_loop.clear()

    async def body() -> None:
        for _ in range(RING.size + 1):  # every slot starts once: each probe runs
            clock.advance(RING.slot_ms)
            await settle_probe(feed, clock)
        for topic in RING.topics():
            kafka.create(topic, 3)  # a partition added: the listing finds it
        clock.advance(SETTINGS.metadata_refresh_ms)
        await listed(feed, clock)

    run(body())
    assert feed.partitions > 2 * RING.size  # the listing ran and found the new partitions
    assert ring.off_loop == []


# -- the quiet wait: a worker thread blocks in the ring consumer -----------------------------


class GatedConsumer(FakeConsumer):
    """consume() with a timeout blocks until `arrive` is set (a fetch answered), then reads.
    RingFeed.wait blocks for the first record only (consume_available): the real consume(n, t)
    waits out t unless n records come (tests/integration/releaser/test_consumer_contract.py)."""

    def __init__(self, kafka: FakeKafka, group: str) -> None:
        super().__init__(kafka, group)
        self.arrive = threading.Event()
        self.running = 0
        self.most_running = 0
        self.threads: list[str] = []
        self._count = threading.Lock()

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        with self._count:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if timeout > 0:
                self.threads.append(threading.current_thread().name)
                assert self.arrive.wait(5)
            return super().consume(num_messages, timeout)
        finally:
            with self._count:
                self.running -= 1


def quiet_world() -> tuple[FakeKafka, ManualClock, RingFeed, GatedConsumer, Accepting, str]:
    kafka, clock = ring_world()
    feed, _, dispatcher, _ = ring_feed(kafka, clock)
    consumer = GatedConsumer(kafka, "sched.dispatcher")
    feed._consumer = consumer  # type: ignore[assignment]
    feed.start(clock.now_ms(), slack_ms=0)
    return kafka, clock, feed, consumer, dispatcher, RING.topic_for(clock.now_ms())


def test_a_quiet_wait_blocks_in_a_worker_thread_and_returns_with_the_record() -> None:
    kafka, clock, feed, consumer, dispatcher, topic = quiet_world()

    async def body() -> None:
        waiting = asyncio.create_task(feed.wait(5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # blocked on the consumer, not on the loop
        kafka.produce(topic, 0, due("m-1", clock.now_ms()), timestamp_ms=clock.now_ms())
        consumer.arrive.set()
        assert await asyncio.wait_for(waiting, 5) == 1

    run(body())
    assert dispatcher.accepted == ["m-1"]
    assert consumer.threads and threading.current_thread().name not in consumer.threads


def test_a_cancelled_quiet_wait_drops_nothing_its_consume_read() -> None:
    """The consume of a cancelled wait still runs to its end and takes records off the
    consumer's queue: the next poll hands them on, and no second consume runs beside it.
    Awaiting the consume directly lost them: never delivered until a restart."""
    kafka, clock, feed, consumer, dispatcher, topic = quiet_world()

    async def body() -> None:
        waiting = asyncio.create_task(feed.wait(5.0))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert feed.poll() == 0  # its consume is still running: no second one
        kafka.produce(topic, 0, due("m-1", clock.now_ms()), timestamp_ms=clock.now_ms())
        consumer.arrive.set()
        await feed.finish_wait()
        assert feed.poll() == 1

    run(body())
    assert dispatcher.accepted == ["m-1"]
    assert consumer.most_running == 1


def test_a_quiet_wait_ends_when_the_committer_does_and_keeps_what_its_consume_reads() -> None:
    """A fenced committer (its transaction failed while the loop waited) must stop the loop at
    once, not when the consume returns: a fenced dispatcher that goes on firing delivers beside
    the new owner. (Seen in CI: the fence surfaced only at the stop, 20 s later.)"""
    kafka, clock, feed, consumer, dispatcher, topic = quiet_world()

    async def body() -> None:
        committer = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(feed.wait(5.0, until=committer))
        await asyncio.sleep(0.05)
        committer.set_exception(RuntimeError("fenced"))
        assert await asyncio.wait_for(waiting, 1.0) == 0  # not waiting out the consume
        kafka.produce(topic, 0, due("m-1", clock.now_ms()), timestamp_ms=clock.now_ms())
        consumer.arrive.set()
        await feed.finish_wait()
        assert feed.poll() == 1  # what the consume read is handed on
        with contextlib.suppress(RuntimeError):
            committer.result()

    run(body())
    assert dispatcher.accepted == ["m-1"]
    assert consumer.most_running == 1


def test_a_quiet_wait_does_not_queue_behind_a_busy_default_pool() -> None:
    """Metadata questions (listings, probes, progress) run in the shared default pool; when
    they are slow, a quiet wait queued behind them would hold the loop far past its timeout."""
    kafka, clock, feed, consumer, dispatcher, topic = quiet_world()
    release = threading.Event()

    async def body() -> None:
        # More jobs than the default pool has threads (at most 32): every one of them is busy.
        busy = [asyncio.ensure_future(asyncio.to_thread(release.wait, 10)) for _ in range(40)]
        await asyncio.sleep(0.05)
        kafka.produce(topic, 0, due("m-1", clock.now_ms()), timestamp_ms=clock.now_ms())
        consumer.arrive.set()
        try:
            assert await asyncio.wait_for(feed.wait(5.0), 2.0) == 1
        finally:
            release.set()
            await asyncio.gather(*busy)
            await feed.finish_wait()

    run(body())
    assert dispatcher.accepted == ["m-1"]


class WatchedGatedConsumer(GatedConsumer):
    """Notes the calls that come while a quiet wait's consume runs: on the real consumer each
    of them waits until that consume returns, and holds the event loop meanwhile."""

    def __init__(self, kafka: FakeKafka, group: str) -> None:
        super().__init__(kafka, group)
        self.during_consume: list[str] = []

    def _note(self, name: str) -> None:
        if self.running:
            self.during_consume.append(name)

    def pause(self, tps: list[TopicPartition]) -> None:
        self._note("pause")
        super().pause(tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self._note("resume")
        super().resume(tps)

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        self._note("position")
        return super().position(tps)

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self._note("incremental_assign")
        super().incremental_assign(tps)


def test_a_probe_or_listing_answer_is_applied_at_the_loop_turn_not_during_a_quiet_wait() -> None:
    """A probe's answer (position, then pause) and a listing's (assign) were applied by their
    tasks as soon as they came, on the event loop, while the loop sat in a quiet wait: each call
    waited for the wait's consume (up to half a second), and the committer and the deliveries
    in flight with it. They wait for the loop's next turn now."""
    kafka, clock = ring_world(partitions=1)
    feed, *_ = ring_feed(kafka, clock)
    consumer = WatchedGatedConsumer(kafka, "sched.dispatcher")
    feed._consumer = consumer  # type: ignore[assignment]
    feed.start(clock.now_ms(), slack_ms=0)
    draining: set[tuple[str, int]] = set()

    async def body() -> None:
        clock.advance(RING.slot_ms)  # a slot becomes future: it drains, a probe asks its end
        feed.rotate(clock.now_ms())
        draining.update(feed._draining)
        feed.probe(clock.now_ms())
        for topic in RING.topics():
            kafka.add_partitions(topic, 2)
        clock.advance(SETTINGS.metadata_refresh_ms)
        feed.refresh(clock.now_ms())
        waiting = asyncio.create_task(feed.wait(5.0))
        while feed._probe is not None or feed._listing is not None:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        consumer.arrive.set()
        await waiting
        feed.probe(clock.now_ms())  # the next turn
        feed.refresh(clock.now_ms())

    run(body())
    assert consumer.during_consume == []
    assert draining and draining <= feed._paused  # the probe's answer was applied
    assert feed.partitions == 2 * RING.size  # and the listing's


# -- the commands view -----------------------------------------------------------------------


def abort(message_id: str) -> bytes:
    command = Command(
        message_id=message_id, app_id="app", kind=CommandKind.ABORT, generation=0, issued_ms=1
    )
    return CODECS.command.encode(command)


def commands_world(partitions: int) -> tuple[FakeKafka, ManualClock, CommandsFeed, FakeConsumer]:
    kafka, clock = FakeKafka(), ManualClock()
    kafka.create(TOPICS.commands, partitions)
    consumer = FakeConsumer(kafka, "sched.dispatcher-commands-0")
    view = CommandView(clock.now_ms())
    feed = CommandsFeed(consumer, TOPICS.commands, view, CODECS, clock, 100)  # type: ignore[arg-type]
    return kafka, clock, feed, consumer


def test_the_view_is_sized_from_the_topic_not_from_a_setting() -> None:
    """The setting said 6 partitions, the topic has 3: the previous view waited for 6 partitions
    to reach their end and so never let anything fire."""
    _, clock, feed, _ = commands_world(partitions=3)
    feed.start(clock.now_ms() - CYCLE)
    assert asyncio.run(feed.catch_up(1_000))
    assert feed.view.partitions == [0, 1, 2]


def test_a_commands_partition_added_while_running_is_read_before_anything_fires() -> None:
    kafka, clock, feed, _ = commands_world(partitions=2)
    feed.start(clock.now_ms())

    async def body() -> None:
        assert await feed.catch_up(1_000)
        for _ in range(10):  # running for a while, current
            clock.advance(100)
            await feed.confirm_once()
        assert feed.view.lag_ms(clock.now_ms()) == 0
        kafka.add_partitions(TOPICS.commands, 3)
        kafka.produce(TOPICS.commands, 2, abort("m-new"), clock.now_ms())
        clock.advance(100)
        await feed.confirm_once()  # finds partition 2: not fresh until it is read
        assert feed.view.lag_ms(clock.now_ms()) > SCHEDULING.cancel_guard_ms
        feed.poll()
        clock.advance(100)
        await feed.confirm_once()
        feed.poll()

    run(body())
    assert feed.view.aborted("app", "m-new", 0)
    assert feed.view.lag_ms(clock.now_ms()) <= 100


def test_a_stalled_fetch_makes_the_view_age_instead_of_reading_lag_zero() -> None:
    """Fetches stop (a leader move, a blocked connection) while an abort waits in the topic: the
    previous view, edge-triggered, kept reporting lag 0 because nothing arrived."""
    kafka, clock, feed, consumer = commands_world(partitions=2)
    feed.start(clock.now_ms())

    async def body() -> None:
        assert await feed.catch_up(1_000)
        consumer.stalled = True
        kafka.produce(TOPICS.commands, 1, abort("m"), clock.now_ms())
        for _ in range(SCHEDULING.cancel_guard_ms // 100 + 2):
            clock.advance(100)
            feed.poll()
            await feed.confirm_once()
        assert feed.view.lag_ms(clock.now_ms()) > SCHEDULING.cancel_guard_ms
        consumer.stalled = False
        feed.poll()
        assert feed.view.aborted("app", "m", 0)
        assert feed.view.lag_ms(clock.now_ms()) <= 100

    run(body())


def test_a_busy_partition_does_not_keep_the_view_from_being_fresh() -> None:
    """One tenant's bulk abort: 1,000 commands/s spread over 6 partitions, read at once as they
    arrive. The previous view was current only while every partition sat at its end at the same
    instant (simulated: 'may fire' false 85 % of the time at this rate); per partition, each is
    fresh once read up to an end asked for, so the lag stays within one confirm interval."""
    kafka, clock, feed, _ = commands_world(partitions=6)
    feed.start(clock.now_ms())
    lags: list[int] = []

    async def body() -> None:
        assert await feed.catch_up(1_000)
        for tick in range(2_000):  # 2 s of 1 ms ticks, one command per ms
            kafka.produce(TOPICS.commands, tick % 6, abort(f"m{tick}"), clock.now_ms())
            clock.advance(1)
            if tick % 5 == 0:
                feed.poll()
            if tick % 100 == 0:
                await feed.confirm_once()
            lags.append(feed.view.lag_ms(clock.now_ms()))

    run(body())
    assert max(lags[200:]) <= 2 * 100
    assert feed.view.aborted("app", "m1995", 0)


def test_a_partition_that_ends_in_a_transaction_marker_is_fresh_without_a_partition_eof() -> None:
    """Commands written in a transaction end with its marker, which takes an offset and is
    never handed out. The view used to pass it only by the partition EOF that librdkafka
    reports with the next empty fetch, which forced a fetch wait of a few ms (200 fetches a
    second, idle). It follows the consumer's position now, which passes the marker."""
    kafka, clock, feed, _ = commands_world(partitions=1)
    producer = FakeTransactionalProducer(kafka, "ingest-0")
    producer.init_transactions()
    feed.start(clock.now_ms())

    async def body() -> None:
        assert await feed.catch_up(1_000)
        producer.begin_transaction()
        producer.produce(TOPICS.commands, abort("m-txn"), partition=0, timestamp=clock.now_ms())
        producer.commit_transaction()
        clock.advance(100)
        feed.poll()
        await feed.confirm_once()  # the end asked for is past the marker

    run(body())
    assert feed.view.aborted("app", "m-txn", 0)
    assert feed.view.lag_ms(clock.now_ms()) == 0


def test_a_record_appended_while_the_start_is_looked_up_is_not_skipped() -> None:
    """start_offsets asks two questions (the first record since an instant, and the end). A
    record appended between them used to land before the start when the end was asked second:
    a new partition's first record, or an abort written at startup, was skipped."""
    kafka, clock = FakeKafka(), ManualClock()
    kafka.create(TOPICS.commands, 1)

    class Appending(FakeConsumer):
        def offsets_for_times(self, tps: list[TopicPartition], timeout: float = -1) -> Any:
            answer = super().offsets_for_times(tps, timeout)
            if tps[0].offset != OFFSET_END:  # right after the "first record since" question
                kafka.produce(TOPICS.commands, 0, abort("m-racing"), clock.now_ms())
            return answer

    consumer = Appending(kafka, "g")
    feed = CommandsFeed(consumer, TOPICS.commands, CommandView(clock.now_ms()), CODECS, clock, 100)  # type: ignore[arg-type]
    feed.start(clock.now_ms())
    feed.poll()
    assert feed.view.aborted("app", "m-racing", 0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ([("other", b"1")], None),
        ([(PARKED_HEADER, b"3600000")], 3_600_000),
        ([(PARKED_HEADER, b"-5")], 0),
        ([(PARKED_HEADER, b"not a number")], None),  # an ordinary copy of its attempt
        ({PARKED_HEADER: b"12"}, 12),
    ],
)
def test_the_parked_header_of_a_ring_record(headers: Headers, expected: int | None) -> None:
    assert parked_uncounted_ms(headers) == expected
