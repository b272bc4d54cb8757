"""The consumer behaviours the dispatcher's feeds rely on, and the transactional producer's
fencing the releaser and dispatcher rely on, checked on the real broker and on the fake of the
unit tests (tests/unit/releaser/fake_kafka.py) alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from scheduler.kafka.consume import consume_available
from scheduler.records import DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.releaser.runtime import KafkaRingPublisher, ReleaserFenced
from tests.unit.releaser.fake_kafka import FakeConsumer, FakeKafka, FakeTransactionalProducer

# Record timestamps are fixed so both worlds see the same instants; the real topic keeps its records
# forever (retention.ms -1), or the broker's retention would delete them once T0 is a week old.
T0 = 1_767_225_600_000


class World(Protocol):
    topic: str

    def produce(self, partition: int, value: bytes, timestamp_ms: int) -> None: ...
    def add_partitions(self, total: int) -> None: ...
    def commit(self, partition: int, offset: int, metadata: str) -> None: ...
    def consumer(self, *, eof: bool = False) -> Any: ...
    def transactional_producer(self, transactional_id: str) -> Any: ...
    def create(self, topic: str) -> None: ...
    def settle(self) -> None: ...


@dataclass
class RealWorld:
    kafka: KafkaSettings
    topic: str

    def __post_init__(self) -> None:
        self.admin = AdminClient(self.kafka.client_config())
        topic = NewTopic(self.topic, 2, 1, config={"retention.ms": "-1"})
        self.admin.create_topics([topic])[self.topic].result()
        self.producer = Producer(self.kafka.client_config())
        self.group = f"{self.topic}-group"

    def produce(self, partition: int, value: bytes, timestamp_ms: int) -> None:
        self.producer.produce(self.topic, value, partition=partition, timestamp=timestamp_ms)
        self.producer.flush(10)

    def add_partitions(self, total: int) -> None:
        self.admin.create_partitions([NewPartitions(self.topic, total)])[self.topic].result()

    def commit(self, partition: int, offset: int, metadata: str) -> None:
        c = Consumer({**self.kafka.client_config(), "group.id": self.group})
        c.commit(
            offsets=[TopicPartition(self.topic, partition, offset, metadata=metadata)],
            asynchronous=False,
        )
        c.close()

    def consumer(self, *, eof: bool = False) -> Any:
        return Consumer(
            {
                **self.kafka.client_config(),
                "group.id": self.group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": eof,
                "fetch.wait.max.ms": 5,
            }
        )

    def transactional_producer(self, transactional_id: str) -> Any:
        return Producer({**self.kafka.client_config(), "transactional.id": transactional_id})

    def create(self, topic: str) -> None:
        self.admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "-1"})])[
            topic
        ].result()

    def settle(self) -> None:
        time.sleep(0.2)


@dataclass
class FakeWorld:
    topic: str

    def __post_init__(self) -> None:
        self.kafka = FakeKafka()
        self.kafka.create(self.topic, 2)

    def produce(self, partition: int, value: bytes, timestamp_ms: int) -> None:
        self.kafka.produce(self.topic, partition, value, timestamp_ms)

    def add_partitions(self, total: int) -> None:
        self.kafka.add_partitions(self.topic, total)

    def commit(self, partition: int, offset: int, metadata: str) -> None:
        self.kafka.commit("g", self.topic, partition, offset, metadata)

    def consumer(self, *, eof: bool = False) -> Any:
        return FakeConsumer(self.kafka, "g", eof=eof)

    def transactional_producer(self, transactional_id: str) -> Any:
        return FakeTransactionalProducer(self.kafka, transactional_id)

    def create(self, topic: str) -> None:
        self.kafka.create(topic, 1)

    def settle(self) -> None:
        pass


@pytest.fixture(params=["real", "fake"])
def world(request: pytest.FixtureRequest, kafka_settings: KafkaSettings) -> Iterator[World]:
    topic = f"{kafka_settings.topic_prefix}contract"
    yield RealWorld(kafka_settings, topic) if request.param == "real" else FakeWorld(topic)


def drain(consumer: Any, rounds: int = 40) -> list[tuple[int, int, bool]]:
    """(partition, offset, is_eof) of everything consumed until nothing comes for a while."""
    out: list[tuple[int, int, bool]] = []
    quiet = 0
    while quiet < 3 and rounds:
        rounds -= 1
        batch = consumer.consume(num_messages=100, timeout=0.2)
        quiet = 0 if batch else quiet + 1
        for m in batch:
            error = m.error()
            eof = error is not None and error.code() == KafkaError._PARTITION_EOF
            out.append((m.partition(), m.offset(), eof))
    return out


def test_a_waiting_batch_read_hands_out_the_first_record_without_waiting_out_its_timeout(
    world: World,
) -> None:
    """consume(n, timeout) waits for n records or the whole timeout; the dispatcher's quiet
    wait and the bucketer use consume_available, which returns with the first record."""
    world.produce(0, b"first", T0)
    consumer = world.consumer()
    consumer.assign([TopicPartition(world.topic, 0, 0)])
    try:
        started = time.monotonic()
        records = consume_available(consumer, 500, timeout_s=20.0)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    assert [m.value() for m in records] == [b"first"]
    assert elapsed < 10.0  # a plain consume(500, 20.0) returns after 20 s


def test_offsets_lookups_committed_offsets_and_listing(world: World) -> None:
    for i, ts in enumerate((T0, T0 + 10, T0 + 20)):
        world.produce(0, b"%d" % i, ts)
    world.commit(1, 0, "1234")
    c = world.consumer()
    found = c.offsets_for_times(
        [TopicPartition(world.topic, 0, T0 + 5), TopicPartition(world.topic, 1, T0)], 10
    )
    assert [tp.offset for tp in found] == [1, -1]  # first at/after the instant; none: -1
    end = c.offsets_for_times([TopicPartition(world.topic, 0, OFFSET_END)], 10)
    assert [tp.offset for tp in end] == [3]
    committed = c.committed([TopicPartition(world.topic, 0), TopicPartition(world.topic, 1)], 10)
    assert committed[0].offset < 0
    assert (committed[1].offset, committed[1].metadata) == (0, "1234")
    assert sorted(c.list_topics(world.topic, timeout=10).topics[world.topic].partitions) == [0, 1]
    world.add_partitions(3)
    world.settle()
    assert len(c.list_topics(world.topic, timeout=10).topics[world.topic].partitions) == 3
    c.close()


def test_positions_pause_incremental_assign_and_end_of_partition_events(world: World) -> None:
    for i in range(3):
        world.produce(0, b"%d" % i, T0 + i)
    world.produce(1, b"x", T0)
    c = world.consumer(eof=True)
    c.assign([TopicPartition(world.topic, 0, 1)])
    assert c.position([TopicPartition(world.topic, 0)])[0].offset < 0  # unknown before a fetch
    assert drain(c) == [(0, 1, False), (0, 2, False), (0, 3, True)]  # one end event
    assert c.position([TopicPartition(world.topic, 0)])[0].offset == 3
    c.pause([TopicPartition(world.topic, 0)])
    world.produce(0, b"late", T0)
    c.incremental_assign([TopicPartition(world.topic, 1, 0)])
    assert drain(c) == [(1, 0, False), (1, 1, True)]  # the paused partition is not fetched
    c.resume([TopicPartition(world.topic, 0)])
    assert drain(c) == [(0, 3, False), (0, 4, True)]
    c.close()


def read_one(consumer: Any, timeout_s: float = 10) -> tuple[int, int] | None:
    """(partition, offset) of the first record read within `timeout_s` (a first fetch after an
    assignment can take longer than `drain`'s quiet rounds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in consumer.consume(num_messages=1, timeout=0.2):
            if m.error() is None:
                return m.partition(), m.offset()
    return None


def test_a_hand_assigned_consumer_s_group_metadata_never_changes(world: World) -> None:
    # The dispatcher's sink takes the ring consumer's metadata once (runtime.py): asked for each
    # transaction, it waited for the ring's consume in progress in another thread, up to 0.5 s.
    c = world.consumer()
    before = c.consumer_group_metadata()
    world.produce(0, b"x", T0)
    world.produce(1, b"y", T0)
    c.assign([TopicPartition(world.topic, 0, 0)])
    assert read_one(c) == (0, 0)
    c.incremental_assign([TopicPartition(world.topic, 1, 0)])
    assert read_one(c) == (1, 0)
    c.unassign()
    assert c.consumer_group_metadata() == before
    c.close()


def test_the_position_passes_a_committed_transaction_s_marker_without_an_end_event(
    world: World,
) -> None:
    """The commands view follows the position (feeds.CommandsFeed): once a transaction's records
    are consumed, a further consume moves the position past its marker, to the end that
    offsets_for_times reports; no partition EOF is needed, and the marker is never handed out."""
    producer = world.transactional_producer(f"{world.topic}-marker")
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(2):
        producer.produce(world.topic, b"%d" % i, partition=0, timestamp=T0 + i)
    producer.commit_transaction(10)
    c = world.consumer()
    tp = TopicPartition(world.topic, 0)
    end_query = [TopicPartition(world.topic, 0, OFFSET_END)]
    deadline = time.monotonic() + 10
    # the commit returns before the coordinator has written the marker: until then the end (the
    # last stable offset) stays before the transaction
    while (end := c.offsets_for_times(end_query, 10)[0].offset) != 3:
        assert time.monotonic() < deadline, f"end {end}, not past the marker"
        time.sleep(0.05)
    c.assign([TopicPartition(world.topic, 0, 0)])
    assert drain(c) == [(0, 0, False), (0, 1, False)]
    assert c.position([tp])[0].offset == end
    c.close()


def test_a_newer_producer_with_the_same_transactional_id_fences_the_older_one(
    world: World,
) -> None:
    transactional_id = f"{world.topic}-txn"
    older = world.transactional_producer(transactional_id)
    older.init_transactions(30)
    older.begin_transaction()
    older.produce(world.topic, b"older", partition=0, timestamp=T0)
    older.flush(10)
    newer = world.transactional_producer(transactional_id)
    newer.init_transactions(30)  # aborts the older instance's open transaction
    for call in (lambda: older.commit_transaction(10), older.begin_transaction):
        with pytest.raises(KafkaException) as raised:
            call()
        error = raised.value.args[0]
        assert (error.code(), error.fatal()) == (KafkaError._FENCED, True)
    # the fatal error is an event too: the next flush raises it, once
    with pytest.raises(KafkaException) as raised:
        older.flush(0)
    assert raised.value.args[0].code() == KafkaError._FENCED
    assert older.flush(0) == 0
    newer.begin_transaction()
    newer.produce(world.topic, b"newer", partition=0, timestamp=T0)
    newer.commit_transaction(10)
    # An instance fenced between two transactions: begin and produce are local, and succeed;
    # the commit reaches the broker and fails.
    newest = world.transactional_producer(transactional_id)
    newest.init_transactions(30)
    newer.begin_transaction()
    newer.produce(world.topic, b"fenced", partition=0, timestamp=T0)
    with pytest.raises(KafkaException) as raised:
        newer.commit_transaction(10)
    error = raised.value.args[0]
    assert (error.code(), error.fatal()) == (KafkaError._FENCED, True)

    assert committed_values(world, world.topic) == [b"newer"]


def committed_values(world: World, topic: str) -> list[bytes]:
    """What a read_committed consumer reads of partition 0, up to its end."""
    c = world.consumer(eof=True)
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    for _ in range(50):
        batch = c.consume(num_messages=100, timeout=0.2)
        values += [m.value() for m in batch if m.error() is None]
        if any(m.error() is not None for m in batch):
            break  # the end of the partition
    c.close()
    return values


def test_a_releaser_fenced_with_records_in_flight_stands_down(world: World) -> None:
    # Two releasers share the transactional id; the newer one's start fences the older, whose
    # flush must say so (ReleaserFenced: it then waits, instead of fencing the newer one back).
    topics = Topics(KafkaSettings(topic_prefix=f"{world.topic}."), SchedulingSettings())
    codecs = Codecs.build(KafkaSettings())
    ring_topic = topics.ring.topic_for_send(T0, T0)
    world.create(ring_topic)

    def releaser() -> KafkaRingPublisher:
        transactional_id = f"{world.topic}-releaser"
        return KafkaRingPublisher(
            lambda: world.transactional_producer(transactional_id), topics, codecs
        )

    older, newer = releaser(), releaser()
    older.start()
    older.publish(_due("M1"), T0)
    older.flush()
    older.publish(_due("M2"), T0)
    newer.start()  # a new lease holder
    with pytest.raises(ReleaserFenced):
        older.flush()
    assert not older.started
    newer.publish(_due("M3"), T0)
    newer.flush()
    newer.close()
    values = committed_values(world, ring_topic)
    assert [codecs.due.decode(v).message_id for v in values] == ["M1", "M3"]


def _due(message_id: str) -> DueMessage:
    return DueMessage(
        message_id=message_id, app_id="app", generation=0, attempt=1, due_ms=T0,
        send_at_ms=T0, created_ms=T0, payload_json="{}",
    )  # fmt: skip
