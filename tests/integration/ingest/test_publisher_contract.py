"""The ingest Publisher's batch contract on the real broker (KafkaPublisher) and on the fake the
unit tests use (FakePublisher): a batch can fail in part, each record's error in its place."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.clock import SystemClock
from scheduler.settings import KafkaSettings
from scheduler_ingest.publisher import (
    FakePublisher,
    KafkaPublisher,
    Publisher,
    PublishError,
    producer_config,
)

from .conftest import read_topic

pytestmark = pytest.mark.integration
LIMIT = 1_024  # the limited topic's max.message.bytes


@dataclass
class PublishWorld:
    publisher: Publisher
    ok_topic: str
    limited_topic: str
    kafka: KafkaSettings | None  # None: the fake

    def delivered(self, topic: str) -> list[bytes]:
        if self.kafka is not None:
            return [r.value for r in read_topic(self.kafka, topic)]
        assert isinstance(self.publisher, FakePublisher)
        return [r.value for r in self.publisher.records if r.topic == topic]


@pytest.fixture(params=["real", "fake"])
def world(request: pytest.FixtureRequest, kafka_settings: KafkaSettings) -> Iterator[PublishWorld]:
    ok, limited = f"{kafka_settings.topic_prefix}ok", f"{kafka_settings.topic_prefix}limited"
    if request.param == "fake":
        yield PublishWorld(FakePublisher({limited: LIMIT}), ok, limited, None)
        return
    admin = AdminClient(kafka_settings.client_config())
    topics = [NewTopic(ok, 1, 1), NewTopic(limited, 1, 1, config={"max.message.bytes": "1024"})]
    for future in admin.create_topics(topics).values():
        future.result()
    publisher = KafkaPublisher(
        producer_config(kafka_settings, timeout_ms=10_000, linger_ms=1.0),
        SystemClock(),
        lambda *_: None,
    )
    try:
        yield PublishWorld(publisher, ok, limited, kafka_settings)
    finally:
        publisher.close()


def test_a_batch_fails_only_in_the_records_the_broker_refused(world: PublishWorld) -> None:
    too_big = os.urandom(4 * LIMIT)  # incompressible: above the limit on the wire too

    async def scenario() -> tuple[list[PublishError | None], list[PublishError | None]]:
        mixed = await world.publisher.publish_many(
            [
                (world.ok_topic, b"k", b"first"),
                (world.limited_topic, b"k", too_big),
                (world.ok_topic, b"k", b"third"),
            ]
        )
        # (not in the same call: the broker refuses the whole record batch of a partition, so
        # a small record batched with the big one on its partition may be refused with it)
        after = await world.publisher.publish_many(
            [(world.ok_topic, b"k", b"after"), (world.limited_topic, b"k", b"small")]
        )
        return mixed, after

    mixed, after = asyncio.run(scenario())
    assert [e is None for e in mixed] == [True, False, True]
    refused = mixed[1]
    assert refused is not None and refused.cause == "kafka_error"
    assert "MSG_SIZE_TOO_LARGE" in str(refused)
    assert after == [None, None]  # the producer and the topic go on after a refused record
    assert world.delivered(world.ok_topic) == [b"first", b"third", b"after"]
    assert world.delivered(world.limited_topic) == [b"small"]
