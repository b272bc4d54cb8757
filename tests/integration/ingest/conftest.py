"""The ingest app on the real stack: Cassandra stores and the confluent-kafka publisher.

One keyspace and one topic set per test module (creating them per test would dominate the run
time on a 2-core machine); each test gets owners and apps with a unique suffix, so tests never
see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cassandra.cluster import Cluster, Session
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.servers import Servers
from scheduler_ingest.destinations import KafkaTopicDirectory
from scheduler_ingest.publisher import KafkaPublisher, Published, producer_config
from scheduler_ingest.settings import IngestSettings
from tests.unit.ingest.harness import COMMANDS, REQUESTS, SCHEDULING, Harness


@dataclass
class LiveEnv:
    kafka: KafkaSettings
    cassandra: CassandraSettings
    cluster: Cluster
    session: Session
    publisher: KafkaPublisher


@pytest.fixture(scope="module")
def live_env(servers: Servers) -> Iterator[LiveEnv]:
    unique = unique_name()
    kafka, cassandra = private_kafka(servers, unique), private_cassandra(servers, unique)
    setup(kafka, cassandra, SCHEDULING)
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    publisher = KafkaPublisher(
        producer_config(kafka, timeout_ms=10_000, linger_ms=1.0), SystemClock(), lambda *_: None
    )
    try:
        yield LiveEnv(kafka, cassandra, cluster, session, publisher)
    finally:
        publisher.close()
        cluster.shutdown()
        drop_keyspace(cassandra)
        delete_topics(kafka)


def read_topic(kafka: KafkaSettings, topic: str) -> list[Published]:
    """Every record of `topic` up to its current end (acknowledged writes are all there)."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"it-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[Published] = []
        done: set[int] = set()
        while len(done) < len(ends):
            message = consumer.poll(10)
            assert message is not None, f"timed out reading {topic}"
            assert message.error() is None, message.error()
            records.append(Published(topic, message.key() or b"", message.value() or b""))
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return records
    finally:
        consumer.close()


class LiveHarness(Harness):
    """Harness on the real stack; `published()` reads Kafka itself."""

    def published(self) -> list[Published]:
        ours = {
            app.app_id
            for owner in (self.alice.owner, self.bob.owner)
            for app in self.apps.apps(owner, include_deleted=True)
        }
        found = []
        for record in read_topic(self.kafka, self.topics.requests):
            if REQUESTS.decode(record.value).app_id in ours:
                found.append(record)
        for record in read_topic(self.kafka, self.topics.commands):
            if COMMANDS.decode(record.value).app_id in ours:
                found.append(record)
        return found


def live_harness(env: LiveEnv, settings: IngestSettings | None = None) -> LiveHarness:
    return LiveHarness(
        settings=settings or IngestSettings(usage_flush_ms=0),
        messages=CassandraMessageStore(env.session),
        apps=CassandraAppStore(env.session),
        usage=CassandraUsageStore(env.session),
        publisher=env.publisher,
        destinations=KafkaTopicDirectory(env.kafka.client_config()),
        kafka=env.kafka,
        suffix="-" + uuid.uuid4().hex[:8],
    )


@pytest.fixture
def h(live_env: LiveEnv) -> Iterator[LiveHarness]:
    harness = live_harness(live_env)
    yield harness
    harness.close()
