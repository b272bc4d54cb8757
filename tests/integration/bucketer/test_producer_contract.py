"""The RecordProducer port (the bucketer's producer) on the real broker (KafkaRecordProducer) and
the fake of the unit tests (InMemoryProducer): a failed flush can have delivered part of the
batch, so the caller's retry duplicates that part and loses nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.kafka.producer import InMemoryProducer, KafkaRecordProducer, ProduceError
from scheduler.settings import KafkaSettings

pytestmark = pytest.mark.integration
LIMIT = 1_024  # the limited topic's max.message.bytes


@dataclass
class ProducerWorld:
    producer: KafkaRecordProducer | InMemoryProducer
    ok_topic: str
    limited_topic: str
    kafka: KafkaSettings | None  # None: the fake

    def delivered(self, topic: str) -> list[bytes]:
        if isinstance(self.producer, InMemoryProducer):
            return [r.value for r in self.producer.on(topic)]
        assert self.kafka is not None
        return _read(self.kafka, topic)


@pytest.fixture(params=["real", "fake"])
def world(request: pytest.FixtureRequest, kafka_settings: KafkaSettings) -> Iterator[ProducerWorld]:
    ok, limited = f"{kafka_settings.topic_prefix}ok", f"{kafka_settings.topic_prefix}limited"
    if request.param == "fake":
        yield ProducerWorld(InMemoryProducer({limited: LIMIT}), ok, limited, None)
        return
    admin = AdminClient(kafka_settings.client_config())
    topics = [NewTopic(ok, 1, 1), NewTopic(limited, 1, 1, config={"max.message.bytes": "1024"})]
    for future in admin.create_topics(topics).values():
        future.result()
    producer = KafkaRecordProducer(kafka_settings.client_config())
    try:
        yield ProducerWorld(producer, ok, limited, kafka_settings)
    finally:
        producer.close()


def test_a_failed_flush_delivered_the_rest_and_a_retry_duplicates_it(world: ProducerWorld) -> None:
    too_big = os.urandom(4 * LIMIT)  # incompressible: above the limit on the wire too
    batch = [
        (world.ok_topic, b"k", b"first"),
        (world.limited_topic, b"k", too_big),
        (world.ok_topic, b"k", b"third"),
    ]
    for topic, key, value in batch:
        world.producer.produce(topic, key, value)
    with pytest.raises(ProduceError, match="Message size too large"):
        world.producer.flush(30)
    assert world.delivered(world.ok_topic) == [b"first", b"third"]  # delivered all the same

    # what a caller does next: the whole batch again, without the refused record
    for topic, key, value in (batch[0], batch[2]):
        world.producer.produce(topic, key, value)
    world.producer.flush(30)
    assert world.delivered(world.ok_topic) == [b"first", b"third", b"first", b"third"]
    assert world.delivered(world.limited_topic) == []


def _read(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """Every record of a one-partition topic up to its current end."""
    consumer = Consumer(
        {**kafka.client_config(), "group.id": f"it-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        while len(values) < high - low:
            message = consumer.poll(10)
            assert message is not None, f"timed out reading {topic}"
            assert message.error() is None, message.error()
            values.append(message.value() or b"")
        return values
    finally:
        consumer.close()
