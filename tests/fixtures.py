"""Shared fixtures (loaded by tests/conftest.py): private topics and keyspaces per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.servers import Servers


@pytest.fixture
def kafka_settings(servers: Servers) -> Iterator[KafkaSettings]:
    """Settings for a private set of topics (prefix unique to this test), deleted afterwards."""
    settings = private_kafka(servers, unique_name())
    yield settings
    delete_topics(settings)


@pytest.fixture
def cassandra_settings(servers: Servers) -> Iterator[CassandraSettings]:
    """Settings for a private keyspace, dropped afterwards."""
    settings = private_cassandra(servers, unique_name())
    yield settings
    drop_keyspace(settings)


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
