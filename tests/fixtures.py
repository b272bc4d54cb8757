"""Shared fixtures (loaded by tests/conftest.py): private topics and keyspaces per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session
from confluent_kafka.admin import AdminClient

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.testing.servers import Servers


def _unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def kafka_settings(servers: Servers) -> Iterator[KafkaSettings]:
    """Settings for a private set of topics (prefix unique to this test), deleted afterwards."""
    settings = KafkaSettings(
        bootstrap_servers=servers.kafka_bootstrap,
        topic_prefix=f"t{_unique()}.",
        replication_factor=1,
        min_insync_replicas=1,
        requests_partitions=2,
        commands_partitions=1,
        due_partitions=1,
        results_partitions=1,
    )
    yield settings
    admin = AdminClient(settings.client_config())
    ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    if ours:
        for future in admin.delete_topics(ours, operation_timeout=30).values():
            future.result()


@pytest.fixture
def cassandra_settings(servers: Servers) -> Iterator[CassandraSettings]:
    """Settings for a private keyspace, dropped afterwards."""
    settings = CassandraSettings(
        contact_points=servers.cassandra_contact_points,
        port=servers.cassandra_port,
        keyspace=f"t_{_unique()}",
        replication_factor=1,
        consistency="LOCAL_ONE",
    )
    yield settings
    cluster, session = connect(settings)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.keyspace}", timeout=60)
    finally:
        cluster.shutdown()


@pytest.fixture
def scheduling_settings() -> SchedulingSettings:
    """Horizons shrunk to seconds: a 6-slot ring of 2 s topics, 1 s buckets."""
    return SchedulingSettings(
        bucket_width_ms=1_000,
        lookahead_ms=4_000,
        placement_margin_ms=1_000,
        ring_size=6,
        ring_slot_ms=2_000,
        cancel_guard_ms=200,
    )


@pytest.fixture
def cassandra_session(cassandra_settings: CassandraSettings) -> Iterator[Session]:
    cluster, session = connect(cassandra_settings)
    yield session
    cluster.shutdown()
