"""The transactional sink against a fake producer, and the ring's pause window."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.settings import SchedulingSettings
from scheduler_releaser.dispatcher.feeds import future_slots, paused_slots, start_offsets
from scheduler_releaser.dispatcher.offsets import OffsetTracker
from scheduler_releaser.dispatcher.ports import OutRecord
from scheduler_releaser.dispatcher.sink import FatalSinkError, TransactionalSink
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.metrics import DispatchMetrics

pytestmark = pytest.mark.unit


class FakeProducer:
    """Records transactions; `fail` holds errors to raise from commit_transaction, in order.

    Delivery reports are served by `flush`, as librdkafka serves them: `refuse` gives a topic's
    records an error, `silent` topics never answer (a destination that times out)."""

    def __init__(self) -> None:
        self.open: list[tuple[str, bytes]] = []
        self.open_partitions: list[tuple[str, int]] = []  # -1: by the key (unassigned)
        self.offsets: list = []
        self.committed: list[tuple[list[tuple[str, bytes]], list]] = []
        self.committed_partitions: list[list[tuple[str, int]]] = []
        self.aborted = 0
        self.fail: list[KafkaError] = []
        self.refuse: dict[str, KafkaError] = {}
        self.silent: set[str] = set()
        self.clock: ManualClock | None = None  # advanced while flush waits for silent topics
        self._reports: list[tuple[str, Callable[[KafkaError | None, object], None]]] = []

    def begin_transaction(self) -> None:
        self.open, self.open_partitions, self.offsets = [], [], []

    def produce(
        self, topic, value=None, key=None, partition=-1, headers=None, on_delivery=None
    ) -> None:
        self.open.append((topic, value))
        self.open_partitions.append((topic, partition))
        if on_delivery is not None:
            self._reports.append((topic, on_delivery))

    def flush(self, timeout: float = -1) -> int:
        if self.clock is not None and any(t in self.silent for t, _ in self._reports):
            self.clock.advance(int(timeout * 1000))  # waited in vain for the silent topics
        reports, self._reports = self._reports, []
        for topic, report in reports:
            if topic in self.silent:
                self._reports.append((topic, report))
            else:
                report(self.refuse.get(topic), None)
        return len(self._reports)

    def send_offsets_to_transaction(self, offsets, metadata) -> None:
        self.offsets = [(tp.topic, tp.partition, tp.offset, tp.metadata) for tp in offsets]

    def commit_transaction(self) -> None:
        assert not self._reports, "librdkafka flushes before it commits"
        if self.fail:
            raise KafkaException(self.fail.pop(0))
        self.committed.append((self.open, self.offsets))
        self.committed_partitions.append(self.open_partitions)

    def abort_transaction(self, timeout: float = -1) -> None:
        self.aborted += 1
        reports, self._reports = self._reports, []
        for _, report in reports:  # purged, as librdkafka purges them
            report(KafkaError(KafkaError._PURGE_QUEUE), None)

    def poll(self, timeout: float) -> int:
        return 0


def error(*, fatal: bool = False, abort: bool = False, retriable: bool = False) -> KafkaError:
    return KafkaError(
        KafkaError._FAIL, "test", fatal=fatal, retriable=retriable, txn_requires_abort=abort
    )


def sink(
    *producers: FakeProducer,
    recover_after_ms: int = 10_000,
    offsets_interval_ms: int = 0,
    clock: ManualClock | None = None,
    destination_timeout_ms: int = 5_000,
    max_batch: int = 2,
    gathered: dict[str, int] | None = None,
) -> tuple[TransactionalSink, OffsetTracker, ManualClock, DispatchMetrics]:
    """A sink whose producer factory hands out `producers` in turn (a replacement is the next)."""
    clock = clock or ManualClock()
    tracker = OffsetTracker()
    metrics = DispatchMetrics(CollectorRegistry())
    queue = list(producers)
    s = TransactionalSink(
        lambda: queue.pop(0),
        b"group-metadata",
        tracker,
        clock,
        metrics,
        max_batch,
        recover_after_ms,
        offsets_interval_ms,
        destination_timeout_ms=destination_timeout_ms,
        gathered=gathered,
    )
    for p in producers:
        p.clock = clock
    return s, tracker, clock, metrics


def run(s: TransactionalSink, steps: Callable[[], Awaitable[None]]) -> None:
    """Start the sink and run `steps` on one event loop (the sink's worker belongs to it)."""

    async def main() -> None:
        await s.start()
        await steps()

    asyncio.run(main())


def test_the_results_of_one_transaction_go_to_one_partition_the_next_to_another() -> None:
    """Each partition a transaction writes costs the brokers a commit marker: a gathered
    topic's records (the results) share one partition per transaction, taking turns, while a
    destination's records keep the partition of their key."""
    p = FakeProducer()
    s, _, _, _ = sink(p, max_batch=3, gathered={"results": 2})
    for n in range(9):
        delivery = OutRecord("dest", b"d%d" % n, key=b"k%d" % n, destination=True)
        s.emit([delivery, OutRecord("results", b"r%d" % n, key=b"m%d" % n)], None)

    async def steps() -> None:
        while await s.flush():
            pass

    run(s, steps)
    assert len(p.committed_partitions) == 3
    results = [
        {part for topic, part in txn if topic == "results"} for txn in p.committed_partitions
    ]
    assert results == [{1}, {0}, {1}]
    assert {part for txn in p.committed_partitions for t, part in txn if t == "dest"} == {-1}


def test_records_and_committable_offsets_go_in_one_transaction() -> None:
    p = FakeProducer()
    s, tracker, clock, _ = sink(p)
    for offset in (5, 6, 7):
        tracker.received("ring.1", 0, offset, now_ms=clock.now_ms() + offset)
    committed_at: list[int] = []
    s.emit([OutRecord("results", b"r6")], Position("ring.1", 0, 6), committed_at.append)
    s.emit([OutRecord("results", b"r5")], Position("ring.1", 0, 5))
    s.emit([OutRecord("results", b"r7")], Position("ring.1", 0, 7))

    async def steps() -> None:
        assert await s.flush() == 2  # bounded: two emits per transaction
        records, offsets = p.committed[0]
        assert records == [("results", b"r6"), ("results", b"r5")]
        # 5 and 6 settled -> commit point 7; metadata: receipt time of the oldest unsettled (7)
        assert offsets == [("ring.1", 0, 7, str(clock.now_ms() + 7))]
        assert committed_at == [clock.now_ms()]
        assert await s.flush() == 1
        assert p.committed[1] == ([("results", b"r7")], [("ring.1", 0, 8, str(clock.now_ms()))])
        assert await s.flush() == 0  # nothing new: no empty transaction

    run(s, steps)


def test_an_abortable_error_retries_the_whole_transaction_and_fatal_stops() -> None:
    p = FakeProducer()
    s, tracker, clock, _ = sink(p)
    tracker.received("ring.1", 0, 1, now_ms=0)
    s.emit([OutRecord("dest", b"x")], Position("ring.1", 0, 1))

    async def steps() -> None:
        p.fail = [error(abort=True)]
        await s.flush()
        assert p.aborted == 1
        # nothing unsettled any more: the metadata is the commit instant
        assert p.committed == [([("dest", b"x")], [("ring.1", 0, 2, str(clock.now_ms()))])]
        s.emit([OutRecord("dest", b"y")], None)
        p.fail = [error(fatal=True)]
        with pytest.raises(FatalSinkError):
            await s.flush()

    run(s, steps)


def test_a_retriable_commit_error_retries_the_commit_only() -> None:
    p = FakeProducer()
    s, _, _, _ = sink(p)
    s.emit([OutRecord("dest", b"x")], None)

    async def steps() -> None:
        p.fail = [error(retriable=True)]
        await s.flush()

    run(s, steps)
    assert p.aborted == 0
    assert p.committed == [([("dest", b"x")], [])]


def test_offsets_ride_along_at_most_every_interval_and_alone_when_idle() -> None:
    p = FakeProducer()
    s, tracker, clock, _ = sink(p, offsets_interval_ms=100)
    for offset in range(4):
        tracker.received("ring.1", 0, offset, now_ms=0)

    async def steps() -> None:
        s.emit([OutRecord("dest", b"0")], Position("ring.1", 0, 0))
        await s.flush()  # the first transaction carries the offsets
        clock.advance(50)
        s.emit([OutRecord("dest", b"1")], Position("ring.1", 0, 1))
        await s.flush()  # 50 ms later: records only
        clock.advance(50)
        s.emit([OutRecord("dest", b"2")], Position("ring.1", 0, 2))
        await s.flush()  # 100 ms after the last offsets: they ride along again
        s.emit([], Position("ring.1", 0, 3))
        await s.flush()  # nothing to produce: the offsets are committed alone

    run(s, steps)
    assert [offsets for _, offsets in p.committed] == [
        [("ring.1", 0, 1, "0")],
        [],
        [("ring.1", 0, 3, "0")],
        [("ring.1", 0, 4, str(clock.now_ms()))],
    ]


class StuckProducer(FakeProducer):
    """Blocks in send_offsets_to_transaction until released, as librdkafka did after a broker
    restart (confluentinc/librdkafka#5456)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.thread: threading.Thread | None = None  # the worker thread it blocked

    def send_offsets_to_transaction(self, offsets, metadata) -> None:
        self.thread = threading.current_thread()
        self.blocked.set()
        self.release.wait()
        super().send_offsets_to_transaction(offsets, metadata)


def test_a_transaction_stuck_before_its_commit_is_redone_on_a_new_producer() -> None:
    stuck, fresh = StuckProducer(), FakeProducer()
    s, tracker, clock, metrics = sink(stuck, fresh, recover_after_ms=10_000)
    tracker.received("ring.1", 0, 1, now_ms=0)
    s.emit([OutRecord("dest", b"x")], Position("ring.1", 0, 1))
    began = clock.now_ms()

    async def steps() -> None:
        flush = asyncio.create_task(s.flush())
        await asyncio.to_thread(stuck.blocked.wait, 10)
        clock.advance(9_999)
        await asyncio.sleep(0.3)  # a few watch periods: not yet stuck by the clock
        assert not flush.done() and s.producer is stuck
        clock.advance(1)
        assert await flush == 1
        assert s.producer is fresh
        # the stuck thread wakes up later: it was abandoned, so it never commits. Its worker
        # was retired, so the thread ends once its job is over: wait for that, then look.
        stuck.release.set()
        assert stuck.thread is not None
        await asyncio.to_thread(stuck.thread.join, 10)
        assert not stuck.thread.is_alive()

    run(s, steps)
    # the same records and offsets (metadata from the first attempt) on the new producer
    assert fresh.committed == [([("dest", b"x")], [("ring.1", 0, 2, str(began))])]
    assert stuck.committed == []
    assert metrics.transactions.labels("abandoned")._value.get() == 1


class StuckInCommit(FakeProducer):
    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Event()
        self.release = threading.Event()

    def commit_transaction(self) -> None:
        self.blocked.set()
        self.release.wait()
        super().commit_transaction()


def test_a_transaction_stuck_inside_its_commit_is_not_redone() -> None:
    """Whether it committed cannot be known: redoing it could duplicate a Kafka delivery."""
    stuck, fresh = StuckInCommit(), FakeProducer()
    s, _, clock, _ = sink(stuck, fresh, recover_after_ms=10_000)
    s.emit([OutRecord("dest", b"x")], None)

    async def steps() -> None:
        flush = asyncio.create_task(s.flush())
        await asyncio.to_thread(stuck.blocked.wait, 10)
        clock.advance(60_000)
        await asyncio.sleep(0.3)
        assert not flush.done() and s.producer is stuck
        stuck.release.set()
        assert await flush == 1

    run(s, steps)
    assert stuck.committed == [([("dest", b"x")], [])] and fresh.committed == []


class WatchedClock(ManualClock):
    """A manual clock that counts the reads of the sink's transaction thread: a commit waiting
    for its `not_before_ms` polls it, so a test can tell that the commit is being held."""

    def __init__(self) -> None:
        super().__init__()
        self._reads = 0
        self._read = threading.Condition()

    def now_ms(self) -> int:
        if threading.current_thread().name == "transactions":
            with self._read:
                self._reads += 1
                self._read.notify_all()
        return super().now_ms()

    def polled(self, times: int = 3, timeout_s: float = 5.0) -> bool:
        """Wait until the transaction thread has read the clock `times` more times."""
        with self._read:
            target = self._reads + times
            return self._read.wait_for(lambda: self._reads >= target, timeout_s)


class ClockedProducer(FakeProducer):
    """Notes the sink's clock at every commit."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.committed_at: list[int] = []

    def commit_transaction(self) -> None:
        self.committed_at.append(self.clock.now_ms())
        super().commit_transaction()


def test_a_commit_waits_until_the_clock_reaches_not_before() -> None:
    clock = WatchedClock()
    p = ClockedProducer(clock)
    s, tracker, _, _ = sink(p, clock=clock)
    tracker.received("ring.1", 0, 1, now_ms=0)
    due = clock.now_ms() + 30
    committed_at: list[int] = []
    s.emit([OutRecord("dest", b"x")], Position("ring.1", 0, 1), committed_at.append, due)

    async def steps() -> None:
        flush = asyncio.create_task(s.flush())
        # produced and offsets sent, then held: the worker keeps reading the clock
        assert await asyncio.to_thread(clock.polled), "the commit does not wait for the clock"
        assert p.committed == [] and not flush.done()
        clock.advance(29)  # 1 ms before not_before
        assert await asyncio.to_thread(clock.polled)
        assert p.committed == [] and not flush.done()
        clock.advance(1)
        assert await asyncio.wait_for(flush, 5) == 1

    run(s, steps)
    assert p.committed_at == [due]
    assert p.committed == [([("dest", b"x")], [("ring.1", 0, 2, str(due - 30))])]
    assert committed_at == [due]


def test_a_commit_is_never_before_not_before_while_another_thread_moves_the_clock() -> None:
    """Once the commit waits, another thread moves the clock in 3 ms steps: the transaction
    commits at the first reading at or after the latest not_before of its batch."""
    clock = WatchedClock()
    p = ClockedProducer(clock)
    s, _, _, _ = sink(p, clock=clock)
    start = clock.now_ms()
    s.emit([OutRecord("dest", b"early")], None, not_before_ms=start + 20)
    s.emit([OutRecord("dest", b"late")], None, not_before_ms=start + 61)  # the batch's max
    done = threading.Event()

    def advance() -> None:
        clock.polled(1)  # the commit is waiting (else the flush below fails the test)
        while not done.is_set() and clock.now_ms() < start + 300:
            clock.advance(3)
            done.wait(0.001)

    async def steps() -> None:
        mover = threading.Thread(target=advance)
        mover.start()
        try:
            assert await asyncio.wait_for(s.flush(), 5) == 2
        finally:
            done.set()
            mover.join()

    run(s, steps)
    [at] = p.committed_at
    assert start + 61 <= at < start + 300
    assert p.committed == [([("dest", b"early"), ("dest", b"late")], [])]


def test_records_without_not_before_or_already_due_commit_at_once() -> None:
    clock = WatchedClock()
    p = ClockedProducer(clock)
    s, _, _, _ = sink(p, clock=clock)
    now = clock.now_ms()

    async def steps() -> None:
        s.emit([OutRecord("dest", b"a")], None)
        assert await asyncio.wait_for(s.flush(), 5) == 1  # the clock never moves
        s.emit([OutRecord("dest", b"b")], None, not_before_ms=now)
        s.emit([OutRecord("dest", b"c")], None, not_before_ms=now - 1_000)
        assert await asyncio.wait_for(s.flush(), 5) == 2

    run(s, steps)
    assert p.committed_at == [now, now]
    assert [records for records, _ in p.committed] == [
        [("dest", b"a")],
        [("dest", b"b"), ("dest", b"c")],
    ]


def test_only_the_batch_holding_a_future_record_waits() -> None:
    """At most 2 emits per transaction (the helper's max_batch): the second transaction holds
    only records without not_before and commits at once, after the first."""
    clock = WatchedClock()
    p = ClockedProducer(clock)
    s, _, _, _ = sink(p, clock=clock)
    now = clock.now_ms()
    s.emit([OutRecord("dest", b"1")], None)
    s.emit([OutRecord("dest", b"2")], None, not_before_ms=now + 10)
    s.emit([OutRecord("dest", b"3")], None)

    async def steps() -> None:
        first = asyncio.create_task(s.flush())
        assert await asyncio.to_thread(clock.polled)
        assert p.committed == []
        clock.advance(10)
        assert await asyncio.wait_for(first, 5) == 2
        assert await asyncio.wait_for(s.flush(), 5) == 1  # no clock movement needed

    run(s, steps)
    assert p.committed_at == [now + 10, now + 10]


def test_wait_for_emits_returns_at_once_when_pending_and_wakes_on_emit_or_wake() -> None:
    s, _, _, _ = sink(FakeProducer())

    async def steps() -> None:
        # nothing pending: it waits the whole timeout (a short one here)
        await asyncio.wait_for(s.wait_for_emits(0.01), 5)
        # something pending: at once, whatever the timeout
        s.emit([OutRecord("dest", b"x")], None)
        await asyncio.wait_for(s.wait_for_emits(3_600), 1)
        await s.flush()
        assert s.pending == 0
        # idle: an emit ends the wait
        waiting = asyncio.create_task(s.wait_for_emits(3_600))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        s.emit([OutRecord("dest", b"y")], None)
        await asyncio.wait_for(waiting, 1)
        await s.flush()
        # idle: wake() ends the wait too (shutdown), with nothing pending
        waiting = asyncio.create_task(s.wait_for_emits(3_600))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        s.wake()
        await asyncio.wait_for(waiting, 1)
        assert s.pending == 0

    run(s, steps)


@pytest.mark.parametrize(
    ("lookahead", "slot", "size", "bucket", "expected"),
    [
        (4_000, 2_000, 6, 1_000, {2, 3, 4}),  # test settings: span 6 s = 3 slots, + 1
        (300_000, 60_000, 60, 60_000, set(range(2, 9))),  # production: span 7 slots, + 1
    ],
)
def test_paused_slots_are_the_future_ones_beyond_current_and_next(
    lookahead: int, slot: int, size: int, bucket: int, expected: set[int]
) -> None:
    s = SchedulingSettings(
        lookahead_ms=lookahead,
        ring_slot_ms=slot,
        ring_size=size,
        bucket_width_ms=bucket,
        placement_margin_ms=bucket,
    )
    assert paused_slots(0, s) == expected
    assert paused_slots(size - 1, s) == {(x + size - 1) % size for x in expected}
    assert future_slots(s) <= size - 1


def test_start_offsets_with_no_fresh_partition_asks_kafka_nothing() -> None:
    """A restart where every ring partition has a committed offset: librdkafka refuses an empty
    offsets_for_times query (_INVALID_ARG), which used to stop the restarted dispatcher."""

    class Refusing:
        def offsets_for_times(self, query: list[TopicPartition], timeout: float) -> None:
            raise AssertionError("no lookup expected")

    start_offsets(Refusing(), [], 0)  # type: ignore[arg-type]


def test_idle_partitions_are_committed_again_with_recent_metadata_every_refresh() -> None:
    """A partition whose commit point does not move kept the metadata of its last commit, so a
    restart reloaded results since the stalest idle partition: about one ring cycle. Now every
    partition is committed again every `offsets_refresh_ms` (which also keeps an idle
    partition's offset from expiring)."""
    producer = FakeProducer()
    clock = ManualClock()
    tracker = OffsetTracker()
    s = TransactionalSink(
        lambda: producer,
        b"group-metadata",
        tracker,
        clock,
        DispatchMetrics(CollectorRegistry()),
        2,
        offsets_interval_ms=0,
        offsets_refresh_ms=60_000,
    )
    tracker.start_at("due.1", 0, 5)  # idle from now on
    tracker.start_at("due.2", 0, 9)
    started = clock.now_ms()

    async def steps() -> None:
        await s.flush()
        clock.advance(30_000)
        tracker.received("due.2", 0, 9, clock.now_ms())
        s.emit([], Position("due.2", 0, 9))
        await s.flush()  # only the moved partition
        clock.advance(30_000)
        await s.flush()  # the refresh: every partition, metadata = now (nothing unsettled)

    run(s, steps)
    first, moved, refresh = [offsets for _, offsets in producer.committed]
    assert first == [("due.1", 0, 5, str(started)), ("due.2", 0, 9, str(started))]
    assert moved == [("due.2", 0, 10, str(started + 30_000))]
    assert sorted(refresh) == [
        ("due.1", 0, 5, str(started + 60_000)),
        ("due.2", 0, 10, str(started + 60_000)),
    ]


def test_settled_ring_records_are_counted_when_their_transaction_commits() -> None:
    """The settlement counter moves only with a commit: while transactions abort in a loop it
    stays flat however many deliveries were made (the alert "due messages are not being
    settled" reads it; deploy/prometheus/alerts.yml)."""
    p = FakeProducer()
    s, tracker, _, metrics = sink(p)
    for offset in (1, 2):
        tracker.received("ring.1", 0, offset, now_ms=0)
    s.emit([OutRecord("results", b"r1")], Position("ring.1", 0, 1))
    s.emit([], Position("ring.1", 0, 2))  # a duplicate: settled without records
    s.emit([OutRecord("results", b"retry")], None)  # no ring record of its own

    def settled() -> float:
        samples = {x.name: x.value for m in metrics.settled.collect() for x in m.samples}
        return samples["scheduler_dispatch_settled_total"]

    async def steps() -> None:
        assert settled() == 0  # exported from the start: a flat line, not "no data"
        p.fail = [error(abort=True)]
        assert await s.flush() == 2
        assert p.aborted == 1 and settled() == 2  # counted once, after the retried commit
        assert await s.flush() == 1
        assert settled() == 2

    run(s, steps)
