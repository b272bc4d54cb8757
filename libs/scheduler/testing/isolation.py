"""Private topics and keyspaces on shared servers, so tests and benchmarks never collide."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient

from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.store.cassandra import connect
from scheduler.testing.servers import Servers


def unique_name() -> str:
    return uuid.uuid4().hex[:10]


def private_kafka(servers: Servers, unique: str) -> KafkaSettings:
    """Topics under a prefix of their own, single-replica, few partitions (a 2-core broker)."""
    return KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        replication_factor=1,
        min_insync_replicas=1,
        requests_partitions=2,
        commands_partitions=1,
        due_partitions=1,
        results_partitions=1,
    )


def private_cassandra(servers: Servers, unique: str) -> CassandraSettings:
    return CassandraSettings(
        contact_points=servers.cassandra_contact_points,
        port=servers.cassandra_port,
        keyspace=f"t_{unique}",
        replication_factor=1,
        consistency="LOCAL_ONE",
    )


def delete_topics(kafka: KafkaSettings) -> None:
    """Delete every topic under the settings' prefix."""
    admin = AdminClient(kafka.client_config())
    ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(kafka.topic_prefix)]
    if ours:
        for future in admin.delete_topics(ours, operation_timeout=30).values():
            future.result()


def delete_topic(kafka: KafkaSettings, name: str) -> None:
    """Delete one topic outside the prefix (a destination), if it exists."""
    admin = AdminClient(kafka.client_config())
    if name in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([name], operation_timeout=30).values():
            future.result()


def drop_keyspace(cassandra: CassandraSettings) -> None:
    cluster, session = connect(cassandra)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {cassandra.keyspace}", timeout=60)
    finally:
        cluster.shutdown()
