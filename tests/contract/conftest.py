"""Each storage port's contract runs against the in-memory fake and the real Cassandra adapter."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cassandra.cluster import Session

from scheduler.clock import ManualClock
from scheduler.encryption import ColumnCipher, Keyring, new_key
from scheduler.settings import CassandraSettings
from scheduler.store.apps import InMemoryAppStore
from scheduler.store.cassandra_buckets import CassandraReleaseProgress
from scheduler.store.migrate import apply_migrations
from scheduler.store.pending_counts import InMemoryPendingCounts
from scheduler.store.ports import BucketStore, MessageStore
from scheduler.store.usage import InMemoryUsageStore
from scheduler.testing.fakes import (
    InMemoryBucketStore,
    InMemoryMessageStore,
    InMemoryScheduleStore,
)
from scheduler_releaser.dispatcher.status_reader import CassandraStatusReader, StatusReader

# Real adapters, by import path, so this suite names the class each service issue must provide.
CASSANDRA_ADAPTERS = {
    "message_store": "scheduler.store.cassandra_messages:CassandraMessageStore",
    "bucket_store": "scheduler.store.cassandra_buckets:CassandraBucketStore",
    "app_store": "scheduler.store.cassandra_apps:CassandraAppStore",
    "usage_store": "scheduler.store.usage:CassandraUsageStore",
    "pending_counts": "scheduler.store.pending_counts:CassandraPendingCounts",
    "schedule_store": "scheduler.store.cassandra_schedules:CassandraScheduleStore",
}


# The adapters that hold encrypted columns run the contract a second time with encryption at rest
# on (secrets and payloads sealed under a primary key of a two-key keyring).
ENCRYPTING = ColumnCipher(
    Keyring.parse(json.dumps({"primary": "k2", "keys": {"k1": new_key(), "k2": new_key()}})),
    secrets=True,
    payloads=True,
)


def _cassandra_adapter(
    port: str, request: pytest.FixtureRequest, encrypted: bool = False, **options: Any
) -> Any:
    module_name, class_name = CASSANDRA_ADAPTERS[port].split(":")
    adapter = getattr(importlib.import_module(module_name), class_name)
    settings: CassandraSettings = request.getfixturevalue("cassandra_settings")
    session: Session = request.getfixturevalue("cassandra_session")
    apply_migrations(session, settings, ManualClock().now_ms())
    session.set_keyspace(settings.keyspace)
    if encrypted:
        options["cipher"] = ENCRYPTING
    return adapter(session, **options)


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
        pytest.param("cassandra-budgeted", marks=pytest.mark.integration),
    ]
)
def schedule_store(request: pytest.FixtureRequest, schedule_clock: ManualClock) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryScheduleStore(schedule_clock)
    elif request.param == "cassandra-budgeted":
        yield _cassandra_adapter("schedule_store", request, scan_budget=3, clock=schedule_clock)
    else:
        encrypted = request.param == "cassandra-encrypted"
        yield _cassandra_adapter("schedule_store", request, encrypted, clock=schedule_clock)


@pytest.fixture
def schedule_clock() -> ManualClock:
    """The clock the schedule store stamps its change rows with."""
    return ManualClock(1_893_499_200_000)


# Small enough that a filtered list of a few dozen rows spends it (production: 2,000 rows).
SMALL_SCAN_BUDGET = 7


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
    ]
)
def budgeted_message_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A message store whose `list` scans at most SMALL_SCAN_BUDGET listing rows per page."""
    if request.param == "fake":
        yield InMemoryMessageStore(scan_budget=SMALL_SCAN_BUDGET)
    else:
        yield _cassandra_adapter("message_store", request, scan_budget=SMALL_SCAN_BUDGET)


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


@dataclass
class ReleaseWorld:
    """A message store whose readers learn the release from this bucket store."""

    messages: MessageStore
    buckets: BucketStore


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
    ]
)
def release_world(request: pytest.FixtureRequest) -> Iterator[ReleaseWorld]:
    if request.param == "fake":
        buckets = InMemoryBucketStore()
        yield ReleaseWorld(InMemoryMessageStore(release=buckets), buckets)
    else:
        buckets = _cassandra_adapter("bucket_store", request)
        session: Session = request.getfixturevalue("cassandra_session")
        progress = CassandraReleaseProgress(session, max_age_s=0)  # no cache: read what was set
        messages = _cassandra_adapter("message_store", request, release=progress)
        yield ReleaseWorld(messages, buckets)


@dataclass
class StatusWorld:
    """A message store and the dispatcher's status reader over the same records."""

    store: MessageStore
    reader: StatusReader


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
    ]
)
def status_world(request: pytest.FixtureRequest) -> Iterator[StatusWorld]:
    if request.param == "fake":
        fake = InMemoryMessageStore()
        yield StatusWorld(fake, fake)
    else:
        store = _cassandra_adapter("message_store", request)
        session: Session = request.getfixturevalue("cassandra_session")
        yield StatusWorld(store, CassandraStatusReader(session))
