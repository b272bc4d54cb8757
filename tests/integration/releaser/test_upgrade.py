"""Upgrading a keyspace written by the version without the bucket index (migrations 0001-0003):
nothing stored before, during or after the rolling update is skipped by the new releaser.

The previous version's writes are made with its own statements (a row in `due_by_bucket` and
its `bucket_partitions` listing, no index entries), and its releaser's watermark is in place.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from cassandra.cluster import Session
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.records import DueMessage
from scheduler.settings import CassandraSettings, SchedulingSettings
from scheduler.store.bucket_index import backfill
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.migrate import BUCKET_INDEX_MIGRATION, apply_migrations
from scheduler.testing.fakes import InMemoryApps
from scheduler_releaser.metrics import ReleaseMetrics
from scheduler_releaser.releaser.core import Releaser
from tests.unit.releaser.harness import REST_APP

pytestmark = pytest.mark.integration
SCHEDULING = SchedulingSettings(
    bucket_width_ms=60_000, lookahead_ms=300_000, placement_margin_ms=60_000
)
WIDTH = SCHEDULING.bucket_width_ms
DAY = 86_400_000


class Published:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self._queued: list[str] = []

    def publish(self, message: DueMessage, now_ms: int) -> None:
        self._queued.append(message.message_id)

    def flush(self) -> None:
        self.ids += self._queued
        self._queued.clear()


def message(n: int, due_ms: int) -> DueMessage:
    return DueMessage(
        message_id=f"01JUPGRADE{n:016d}",
        app_id=REST_APP.app_id,
        generation=0,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=0,
        payload_json="{}",
    )


def old_version_store(session: Session, m: DueMessage) -> None:
    """What the previous version's bucketer wrote for a stored message (no index entries)."""
    bucket, shard = bucket_start(m.due_ms, WIDTH), shard_of(m.message_id, 8)
    session.execute(
        "INSERT INTO bucket_partitions (bucket_ms, app_id, shard) VALUES (%s, %s, %s)",
        (bucket, m.app_id, shard),
    )
    session.execute(
        "INSERT INTO due_by_bucket (bucket_ms, app_id, shard, due_ms, message_id, generation,"
        " attempt, send_at_ms, created_ms, payload_json) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s)",
        (bucket, m.app_id, shard, m.due_ms, m.message_id, 0, 1, m.due_ms, 0, m.payload_json),
    )


def new_version_store(buckets: CassandraBucketStore, m: DueMessage) -> None:
    buckets.store(bucket_start(m.due_ms, WIDTH), shard_of(m.message_id, 8), m)


def test_an_upgraded_keyspace_loses_nothing_before_during_or_after_the_rollout(
    cassandra_settings: CassandraSettings, cassandra_session: Session
) -> None:
    clock = ManualClock()
    now = clock.now_ms()
    session = cassandra_session
    # The previous version: its schema, its releaser's watermark, its stored messages.
    apply_migrations(session, cassandra_settings, now, up_to=BUCKET_INDEX_MIGRATION - 1)
    session.set_keyspace(cassandra_settings.keyspace)
    session.execute(
        "INSERT INTO release_watermark (name, released_up_to_ms, updated_ms)"
        " VALUES ('global', %s, %s)",
        (bucket_start(now, WIDTH) + SCHEDULING.lookahead_ms, now),
    )
    before = [message(1, now + 20 * 60_000), message(2, now + 3 * DAY + 17)]
    for m in before:
        old_version_store(session, m)

    # The upgrade's setup run: the index tables exist, but the index is not complete.
    changes = apply_migrations(session, cassandra_settings, now)
    assert "applied migration 0004_bucket_index" in changes
    buckets = CassandraBucketStore(session)
    assert not buckets.index_complete()
    published = Published()
    releaser = Releaser(
        clock=clock,
        scheduling=SCHEDULING,
        buckets=buckets,
        messages=CassandraMessageStore(session),
        apps=InMemoryApps(REST_APP),
        publisher=published,
        writers=ThreadPoolExecutor(2),
        metrics=ReleaseMetrics(CollectorRegistry()),
        initial_backfill_ms=DAY,
    )

    # During the rolling update old and new writers store side by side; the new releaser walks.
    during_old = message(3, now + 2 * DAY + 5)
    during_new = message(4, now + 2 * DAY + 6 * 60_000)
    old_version_store(session, during_old)
    new_version_store(buckets, during_new)
    clock.advance(16 * 60_000)
    releaser.tick()
    assert published.ids == [before[0].message_id]

    # The rollout is over: the backfill indexes what the old writers stored.
    result = backfill(buckets, clock.now_ms())
    assert result.indexed == 3  # before[1], during_old, during_new (before[0] was released)
    assert buckets.index_complete()
    after = message(5, clock.now_ms() + DAY)
    new_version_store(buckets, after)

    # A week-long outage: the catch-up visits only indexed buckets, and skips none of them.
    clock.advance(7 * DAY)
    releaser.tick()
    assert published.ids == [
        before[0].message_id,
        after.message_id,
        during_old.message_id,
        during_new.message_id,
        before[1].message_id,
    ]
    assert buckets.stored_buckets(0, clock.now_ms() + DAY, 10) == []  # the days were forgotten


def test_setup_after_a_rollback_marks_the_index_incomplete(
    cassandra_settings: CassandraSettings, cassandra_session: Session
) -> None:
    now = ManualClock().now_ms()
    apply_migrations(cassandra_session, cassandra_settings, now)
    buckets = CassandraBucketStore(cassandra_session)
    buckets.claim(now + 300_000, now)
    buckets.advance_watermark(now + 300_000, now)
    assert apply_migrations(cassandra_session, cassandra_settings, now) == []
    assert buckets.index_complete()
    # A releaser of the previous version led for a while: it moved the watermark, never the claim.
    buckets.advance_watermark(now + 360_000, now + 60_000)
    changes = apply_migrations(cassandra_session, cassandra_settings, now + 60_000)
    assert any("bucket index marked incomplete" in change for change in changes)
    assert not buckets.index_complete()
