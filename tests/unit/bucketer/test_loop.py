"""The consume loop with a fake consumer: commit after success only, rewind and retry on failure,
stop after the current batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.ops import Health
from scheduler.settings import KafkaSettings
from scheduler.topics import Topics
from scheduler_bucketer.intake import InputRecord
from scheduler_bucketer.loop import ConsumerLoop
from scheduler_bucketer.metrics import BucketerMetrics
from scheduler_bucketer.settings import BucketerSettings

from .harness import SCHEDULING

pytestmark = pytest.mark.unit
TOPICS = Topics(KafkaSettings(topic_prefix="t."), SCHEDULING)


class FakeMessage:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)

    def topic(self) -> str:
        return TOPICS.requests

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return f"{self._partition}:{self._offset}".encode()


class FakeConsumer:
    """Serves a fixed log per partition, `batch` records per consume; honours seek."""

    def __init__(self, log_sizes: dict[int, int], batch: int) -> None:
        self.log_sizes = log_sizes
        self.batch = batch
        self.position = dict.fromkeys(log_sizes, 0)
        self.commits: list[dict[int, int]] = []
        self.seeks: list[tuple[int, int]] = []
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        self.topics = topics

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for partition, size in self.log_sizes.items():
            while self.position[partition] < size and len(out) < min(self.batch, num_messages):
                out.append(FakeMessage(partition, self.position[partition]))
                self.position[partition] += 1
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.position[tp.partition] = tp.offset

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def assignment(self) -> list[TopicPartition]:
        return []

    def close(self) -> None:
        self.closed = True


class Processor:
    """Fails the batches listed in `fail_calls` (1-based), records the others; stops when done."""

    def __init__(self, fail_calls: set[int], stop: threading.Event, expected: int) -> None:
        self.fail_calls = fail_calls
        self.calls = 0
        self.done: list[str] = []
        self.stop = stop
        self.expected = expected

    def process(self, records: Sequence[InputRecord]) -> None:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("Cassandra unavailable (simulated)")
        self.done += [(r.value or b"").decode() for r in records]
        if len(self.done) >= self.expected:
            self.stop.set()


def _loop(consumer: FakeConsumer, processor: Processor, stop: threading.Event) -> ConsumerLoop:
    settings = BucketerSettings(retry_initial_ms=1, retry_max_ms=1, batch_size=3)
    metrics = BucketerMetrics(CollectorRegistry())
    loop = ConsumerLoop(
        consumer,  # type: ignore[arg-type]
        processor,  # type: ignore[arg-type]
        TOPICS,
        settings,
        metrics,
        ManualClock(),
        stop,
    )
    loop._report_lag = lambda: None  # type: ignore[method-assign]
    return loop


def test_offsets_are_committed_after_each_successful_batch_only() -> None:
    stop = threading.Event()
    consumer = FakeConsumer({0: 4, 1: 2}, batch=3)
    processor = Processor(fail_calls=set(), stop=stop, expected=6)
    _loop(consumer, processor, stop).run()

    assert consumer.commits == [{0: 3}, {0: 4, 1: 2}]
    assert sorted(processor.done) == ["0:0", "0:1", "0:2", "0:3", "1:0", "1:1"]
    assert consumer.closed


def test_a_failed_batch_is_rewound_retried_and_not_committed_until_it_succeeds() -> None:
    stop = threading.Event()
    consumer = FakeConsumer({0: 4, 1: 2}, batch=3)
    processor = Processor(fail_calls={2, 3}, stop=stop, expected=6)
    loop = _loop(consumer, processor, stop)
    loop.run()

    # Batch 1 (0:0-0:2) committed; batch 2 (0:3, 1:0, 1:1) failed twice, rewound each time to
    # its first offsets, then succeeded and was committed. Nothing skipped, nothing committed early.
    assert consumer.commits == [{0: 3}, {0: 4, 1: 2}]
    assert consumer.seeks == [(0, 3), (1, 0), (0, 3), (1, 0)]
    assert sorted(processor.done) == ["0:0", "0:1", "0:2", "0:3", "1:0", "1:1"]
    retries = loop._metrics.retries.labels("other")._value.get()
    assert retries == 2


def test_stop_finishes_the_current_batch_and_commits_it() -> None:
    stop = threading.Event()
    consumer = FakeConsumer({0: 10}, batch=3)

    class StopsMidBatch(Processor):
        def process(self, records: Sequence[InputRecord]) -> None:
            stop.set()  # SIGTERM arrives while this batch is being processed
            super().process(records)

    processor = StopsMidBatch(fail_calls=set(), stop=stop, expected=100)
    _loop(consumer, processor, stop).run()
    assert processor.done == ["0:0", "0:1", "0:2"]
    assert consumer.commits == [{0: 3}]
    assert consumer.closed


def test_readiness_drops_while_a_batch_keeps_failing_and_returns_after() -> None:
    stop = threading.Event()
    consumer = FakeConsumer({0: 9}, batch=3)
    health = Health(ManualClock())
    seen: list[bool] = []

    class Observing(Processor):
        def process(self, records: Sequence[InputRecord]) -> None:
            seen.append(health.ready()[0])
            super().process(records)

    processor = Observing(fail_calls={2}, stop=stop, expected=9)
    loop = _loop(consumer, processor, stop)
    loop._health = health
    loop.run()
    # call 1 ok; call 2 fails; call 3 is its retry (not ready meanwhile); call 4 after success
    assert seen == [True, True, False, True]
    assert health.alive()[0]
