"""Each storage port's contract runs against the in-memory fake and the real Cassandra adapter."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cassandra.cluster import Session

from scheduler.clock import ManualClock
from scheduler.encryption import ColumnCipher, Keyring, new_key
from scheduler.settings import CassandraSettings
from scheduler.store.apps import InMemoryAppStore
from scheduler.store.migrate import apply_migrations
from scheduler.store.pending_counts import InMemoryPendingCounts
from scheduler.store.usage import InMemoryUsageStore
from scheduler.testing.fakes import InMemoryBucketStore, InMemoryMessageStore

# Real adapters, by import path, so this suite names the class each service issue must provide.
CASSANDRA_ADAPTERS = {
    "message_store": "scheduler.store.cassandra_messages:CassandraMessageStore",
    "bucket_store": "scheduler.store.cassandra_buckets:CassandraBucketStore",
    "app_store": "scheduler.store.cassandra_apps:CassandraAppStore",
    "usage_store": "scheduler.store.usage:CassandraUsageStore",
    "pending_counts": "scheduler.store.pending_counts:CassandraPendingCounts",
}


# The adapters that hold encrypted columns run the contract a second time with encryption at rest
# on (secrets and payloads sealed under a primary key of a two-key keyring).
ENCRYPTING = ColumnCipher(
    Keyring.parse(json.dumps({"primary": "k2", "keys": {"k1": new_key(), "k2": new_key()}})),
    secrets=True,
    payloads=True,
)


def _cassandra_adapter(port: str, request: pytest.FixtureRequest, encrypted: bool = False) -> Any:
    module_name, class_name = CASSANDRA_ADAPTERS[port].split(":")
    adapter = getattr(importlib.import_module(module_name), class_name)
    settings: CassandraSettings = request.getfixturevalue("cassandra_settings")
    session: Session = request.getfixturevalue("cassandra_session")
    apply_migrations(session, settings, ManualClock().now_ms())
    session.set_keyspace(settings.keyspace)
    return adapter(session, cipher=ENCRYPTING) if encrypted else adapter(session)


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
        pytest.param("cassandra-encrypted", marks=pytest.mark.integration),
    ]
)
def message_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryMessageStore()
    else:
        yield _cassandra_adapter("message_store", request, request.param == "cassandra-encrypted")


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
        pytest.param("cassandra-encrypted", marks=pytest.mark.integration),
    ]
)
def bucket_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryBucketStore()
    else:
        yield _cassandra_adapter("bucket_store", request, request.param == "cassandra-encrypted")


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
        pytest.param("cassandra-encrypted", marks=pytest.mark.integration),
    ]
)
def app_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryAppStore()
    else:
        yield _cassandra_adapter("app_store", request, request.param == "cassandra-encrypted")


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
    ]
)
def usage_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryUsageStore()
    else:
        yield _cassandra_adapter("usage_store", request)


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
    ]
)
def pending_counts(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryPendingCounts()
    else:
        yield _cassandra_adapter("pending_counts", request)
