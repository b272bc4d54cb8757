"""The release tick with a ManualClock and in-memory stores."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.store.ports import Application, LogEntry, MessageContent, StatusUpdate
from scheduler.testing.fakes import InMemoryApps, InMemoryBucketStore, InMemoryMessageStore
from scheduler_releaser.metrics import ReleaseMetrics
from scheduler_releaser.releaser.core import Releaser

from .harness import REST_APP, SCHEDULING

pytestmark = pytest.mark.unit
WIDTH = SCHEDULING.bucket_width_ms


class FakePublisher:
    def __init__(self) -> None:
        self.queued: list[DueMessage] = []
        self.acked: list[DueMessage] = []
        self.fail = False

    def publish(self, message: DueMessage, now_ms: int) -> None:
        self.queued.append(message)

    def flush(self) -> None:
        if self.fail:
            self.queued.clear()
            raise RuntimeError("broker down")
        self.acked += self.queued
        self.queued.clear()


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.buckets = InMemoryBucketStore()
        self.messages = InMemoryMessageStore(release=self.buckets)
        self.apps = InMemoryApps(REST_APP, replace(REST_APP, app_id="gone", deleted_ms=1))
        self.publisher = FakePublisher()
        self.registry = CollectorRegistry()
        self.releaser = self.build()

    def build(self, tick_budget_ms: int = 5_000, writers: int = 2) -> Releaser:
        return Releaser(
            clock=self.clock,
            scheduling=SCHEDULING,
            buckets=self.buckets,
            messages=self.messages,
            apps=self.apps,
            publisher=self.publisher,
            writers=ThreadPoolExecutor(writers),
            metrics=ReleaseMetrics(CollectorRegistry()),
            initial_backfill_ms=10_000,
            tick_budget_ms=tick_budget_ms,
        )

    def store(self, n: int, due_ms: int, app_id: str = REST_APP.app_id) -> DueMessage:
        m = DueMessage(
            message_id=f"01J{n:023d}",
            app_id=app_id,
            generation=0,
            attempt=1,
            due_ms=due_ms,
            send_at_ms=due_ms,
            created_ms=0,
            payload_json="1",
        )
        bucket = bucket_start(due_ms, WIDTH)
        self.messages.save(
            MessageContent(
                app_id=app_id,
                message_id=m.message_id,
                payload_json="1",
                send_at_ms=due_ms,
                created_ms=0,
            ),
            StatusUpdate(Status.READY, 0, 1, due_ms, 0, stored=True),
            LogEntry(0, "0:1:scheduled:stored", Status.READY, {"bucket_ms": bucket}),
        )
        self.buckets.store(bucket, shard_of(m.message_id, 8), m)
        return m

    def status(self, m: DueMessage) -> Status:
        view = self.messages.get(m.app_id, m.message_id)
        assert view is not None
        return view.state.status


def test_releases_buckets_within_the_lookahead_once_and_they_read_queued() -> None:
    w = World()
    now = w.clock.now_ms()
    soon = [w.store(i, now + 500 + 300 * i) for i in range(10)]  # within 4 s look-ahead
    later = w.store(99, now + 10_000)
    w.releaser.tick()
    assert sorted(m.message_id for m in w.publisher.acked) == sorted(m.message_id for m in soon)
    assert all(w.status(m) is Status.QUEUED for m in soon)
    assert w.status(later) is Status.READY
    assert "0:1:released" in [
        e.entry_id for e in w.messages.logs(soon[0].app_id, soon[0].message_id)
    ]
    assert w.buckets.watermark() == bucket_start(now + SCHEDULING.lookahead_ms - 1, WIDTH) + WIDTH
    # a restart (new releaser, same stores) neither repeats nor skips
    w.publisher.acked.clear()
    w.releaser = w.build()
    w.releaser.tick()
    assert w.publisher.acked == []
    w.clock.advance(7_000)
    w.releaser.tick()
    assert [m.message_id for m in w.publisher.acked] == [later.message_id]


def test_a_release_writes_nothing_per_message_and_the_log_says_when_its_bucket_went_out() -> None:
    w = World()
    writes: list[object] = []
    w.messages.update_statuses = writes.extend  # type: ignore[method-assign]
    w.messages.update_status = lambda *args: writes.append(args)  # type: ignore[method-assign]
    now = w.clock.now_ms()
    soon = [w.store(i, now + 500 + 100 * i) for i in range(30)]
    w.clock.advance(25)
    w.releaser.tick()
    assert len(w.publisher.acked) == 30
    assert writes == []
    assert all(w.status(m) is Status.QUEUED for m in soon)
    released = [
        e
        for e in w.messages.logs(soon[0].app_id, soon[0].message_id)
        if e.entry_id == "0:1:released"
    ]
    assert [(e.at_ms, e.status) for e in released] == [(now + 25, Status.QUEUED)]


def test_overdue_buckets_after_downtime_are_released_at_once_in_order() -> None:
    w = World()
    now = w.clock.now_ms()
    w.releaser.tick()
    stored = [w.store(i, now + 5_000 + 1_000 * i) for i in range(20)]
    w.clock.advance(60_000)  # down for a minute
    w.releaser.tick()
    assert [m.message_id for m in w.publisher.acked] == [m.message_id for m in stored]
    assert w.buckets.partitions(bucket_start(stored[0].due_ms, WIDTH)) == []


@pytest.mark.parametrize(
    ("app_id", "reason"),
    [("gone", "application deleted"), ("never-created", "application not found")],
)
def test_messages_of_a_deleted_or_missing_app_are_aborted_not_released(
    app_id: str, reason: str
) -> None:
    w = World()
    m = w.store(1, w.clock.now_ms() + 1_000, app_id=app_id)
    w.releaser.tick()
    assert w.publisher.acked == []
    assert w.status(m) is Status.ABORTED
    aborted = w.messages.logs(app_id, m.message_id)[-1]
    assert (aborted.status, aborted.data) == (Status.ABORTED, {"reason": reason})


def test_a_failed_flush_leaves_the_bucket_and_the_watermark_for_the_next_tick() -> None:
    w = World()
    m = w.store(1, w.clock.now_ms() + 1_000)
    w.publisher.fail = True
    with pytest.raises(RuntimeError):
        w.releaser.tick()
    assert w.status(m) is Status.READY
    assert w.buckets.partitions(bucket_start(m.due_ms, WIDTH)) != []
    assert w.buckets.watermark() <= bucket_start(m.due_ms, WIDTH)  # not past the failed bucket
    w.publisher.fail = False
    w.releaser.tick()
    assert [x.message_id for x in w.publisher.acked] == [m.message_id]
    assert w.status(m) is Status.QUEUED


def test_a_catch_up_stops_at_the_tick_budget_between_partitions_and_the_next_tick_goes_on() -> None:
    w = World()
    slow = w.buckets = SlowBuckets(w.clock, read_ms=1_000)
    w.releaser = w.build(tick_budget_ms=2_500)
    now = w.clock.now_ms()
    w.releaser.tick()
    # 12 messages in 3 buckets, over several (app, shard) partitions of each bucket
    stored = [w.store(i, now + 10_000 + (i % 3) * WIDTH) for i in range(12)]
    w.clock.advance(600_000)  # an outage
    ticks = 0
    while len(w.publisher.acked) < len(stored):
        before = slow.drops
        w.releaser.tick()
        ticks += 1
        # the budget: 2.5 s of partitions read in 1 s each (reads ahead included: they are
        # made in the writer threads on the same clock)
        assert 0 < slow.drops - before <= 3
        assert ticks < 20
    assert ticks > 2
    assert sorted(m.message_id for m in w.publisher.acked) == sorted(m.message_id for m in stored)
    assert w.buckets.watermark() > max(m.due_ms for m in stored)


def test_a_walk_over_empty_buckets_advances_even_when_a_tick_runs_out_of_budget() -> None:
    w = World()
    slow = w.buckets = SlowBuckets(w.clock, list_ms=100)
    slow.mark_index_incomplete()  # an upgraded keyspace: every bucket is visited
    releaser = w.build(tick_budget_ms=1_000)
    w.clock.advance(100 * WIDTH)
    releaser.tick()
    first = slow.watermark()
    assert first > 0  # part of the walk, kept
    assert first < w.clock.now_ms()
    releaser.tick()
    assert slow.watermark() > first


class SlowBuckets(InMemoryBucketStore):
    """Listing a bucket's partitions and reading a partition take time on the clock."""

    def __init__(self, clock: ManualClock, list_ms: int = 0, read_ms: int = 0) -> None:
        super().__init__()
        self._clock = clock
        self._list_ms = list_ms
        self._read_ms = read_ms
        self.reads = 0
        self.drops = 0

    def partitions(self, bucket_ms: int) -> list[tuple[str, int]]:
        self._clock.advance(self._list_ms)
        return super().partitions(bucket_ms)

    def read(self, bucket_ms: int, app_id: str, shard: int) -> Iterator[DueMessage]:
        self._clock.advance(self._read_ms)
        self.reads += 1
        return super().read(bucket_ms, app_id, shard)

    def drop_partition(self, bucket_ms: int, app_id: str, shard: int) -> None:
        self.drops += 1
        super().drop_partition(bucket_ms, app_id, shard)


class BarrierBuckets(InMemoryBucketStore):
    """Each partition read waits until `parties` reads are in flight at once: a releaser that
    reads one partition after another never gets past the first."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)

    def read(self, bucket_ms: int, app_id: str, shard: int) -> Iterator[DueMessage]:
        self.barrier.wait()
        return super().read(bucket_ms, app_id, shard)


class CountingApps(InMemoryApps):
    def __init__(self, *apps: Application) -> None:
        super().__init__(*apps)
        self.reads: Counter[str] = Counter()

    def get_app(self, app_id: str) -> Application | None:
        self.reads[app_id] += 1
        return super().get_app(app_id)


def test_a_buckets_partitions_are_read_ahead_concurrently_and_each_app_once() -> None:
    """Chaos seed 2027 (1 s buckets, RF 3): partitions read one after another, with an app read
    each, released about one bucket per second, so a releaser back from a fault caught up at
    barely its own pace and the stored path stayed minutes late."""
    w = World()
    w.buckets = BarrierBuckets(parties=4)
    w.apps = CountingApps(REST_APP)
    w.releaser = w.build(writers=4)
    now = w.clock.now_ms()
    w.releaser.tick()
    # one bucket, 8 shards of one app: 8 partitions (shard_of spreads 64 ids over all 8)
    stored = [w.store(i, now + 10_000) for i in range(64)]
    assert len(w.buckets.partitions(bucket_start(now + 10_000, WIDTH))) == 8
    w.clock.advance(600_000)
    w.releaser.tick()
    assert sorted(m.message_id for m in w.publisher.acked) == sorted(m.message_id for m in stored)
    assert w.apps.reads == Counter({REST_APP.app_id: 1})


class CountingWatermark(InMemoryBucketStore):
    def __init__(self) -> None:
        super().__init__()
        self.advances: list[int] = []

    def advance_watermark(self, released_up_to_ms: int, now_ms: int) -> None:
        self.advances.append(released_up_to_ms)
        super().advance_watermark(released_up_to_ms, now_ms)


def test_a_catch_up_over_small_buckets_commits_and_moves_the_watermark_once_per_batch() -> None:
    """Each bucket committed its own transaction, marked itself and moved the watermark (a
    conditional write, four round trips at quorum): with 1 s buckets a releaser behind by a
    fault caught up at barely real time (chaos seeds 4242 and 2027)."""
    w = World()
    watermark = w.buckets = CountingWatermark()
    publisher = w.publisher = CountingPublisher()
    w.releaser = w.build()
    now = w.clock.now_ms()
    w.releaser.tick()
    watermark.advances.clear()
    # 30 buckets of 3 messages each, all overdue after an outage
    stored = [w.store(i, now + 10_000 + (i // 3) * WIDTH) for i in range(90)]
    w.clock.advance(600_000)
    assert w.releaser.tick() == 30
    assert sorted(m.message_id for m in publisher.acked) == sorted(m.message_id for m in stored)
    assert publisher.flushes == 1
    assert watermark.advances == [w.buckets.watermark()]  # once, to the claim
    # every bucket marked released (the time its messages' "released" log entries show)
    assert all(w.buckets.released_at(bucket_start(m.due_ms, WIDTH)) for m in stored)


def test_a_batch_is_committed_once_its_first_bucket_was_read_a_second_ago() -> None:
    """The most overdue messages of a catch-up do not wait for the whole tick's batch."""
    w = World()
    w.buckets = SlowBuckets(w.clock, list_ms=400)
    publisher = w.publisher = CountingPublisher()
    w.releaser = w.build(tick_budget_ms=10_000)
    now = w.clock.now_ms()
    w.releaser.tick()
    stored = [w.store(i, now + 10_000 + i * WIDTH) for i in range(9)]  # 9 buckets, 3.6 s
    w.clock.advance(600_000)
    assert w.releaser.tick() == 9
    assert sorted(m.message_id for m in publisher.acked) == sorted(m.message_id for m in stored)
    assert publisher.flushes == 3  # every third bucket: 1.2 s after the first was listed


class CountingPublisher(FakePublisher):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_the_partitions_of_a_bucket_share_a_transaction() -> None:
    w = World()
    publisher = w.publisher = CountingPublisher()
    w.releaser = w.build()
    due = w.clock.now_ms() + 1_000
    stored = [w.store(i, due) for i in range(40)]  # one bucket, up to 8 shards
    assert len(w.buckets.partitions(bucket_start(due, WIDTH))) > 1
    w.releaser.tick()
    assert publisher.flushes == 1
    assert sorted(m.message_id for m in publisher.acked) == sorted(m.message_id for m in stored)
    assert w.buckets.partitions(bucket_start(due, WIDTH)) == []
