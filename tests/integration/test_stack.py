"""The test servers really work: one Kafka record and one Cassandra row, round trip."""

import time
import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import RoundRobinPolicy
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.testing.servers import Servers
from scheduler.testing.stack import CQL_PROTOCOL_VERSION

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


@pytest.fixture
def topic(servers: Servers) -> Iterator[str]:
    name = f"test-stack-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": servers.kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(
        TIMEOUT
    )
    yield name
    admin.delete_topics([name])[name].result(TIMEOUT)


@pytest.fixture
def session(servers: Servers) -> Iterator[Session]:
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=TIMEOUT)
    cluster = Cluster(
        servers.cassandra_contact_points,
        port=servers.cassandra_port,
        protocol_version=CQL_PROTOCOL_VERSION,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    yield cluster.connect()
    cluster.shutdown()


def test_kafka_produce_and_consume(servers: Servers, topic: str) -> None:
    producer = Producer({"bootstrap.servers": servers.kafka_bootstrap, "acks": "all"})
    producer.produce(topic, key=b"key", value=b"hello")
    assert producer.flush(TIMEOUT) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": servers.kafka_bootstrap,
            "group.id": f"test-stack-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    try:
        deadline = time.monotonic() + TIMEOUT
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
        assert message is not None, "no record consumed"
        assert message.error() is None
        assert (message.key(), message.value()) == (b"key", b"hello")
    finally:
        consumer.close()


def test_cassandra_write_and_read(session: Session) -> None:
    keyspace = f"test_stack_{uuid.uuid4().hex}"
    session.execute(
        f"CREATE KEYSPACE {keyspace} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    try:
        session.execute(f"CREATE TABLE {keyspace}.greetings (id uuid PRIMARY KEY, text text)")
        row_id = uuid.uuid4()
        session.execute(
            f"INSERT INTO {keyspace}.greetings (id, text) VALUES (%s, %s)", (row_id, "hello")
        )
        row = session.execute(
            f"SELECT text FROM {keyspace}.greetings WHERE id = %s", (row_id,)
        ).one()
        assert row is not None
        assert row.text == "hello"
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
