"""The bucket index's upgrade and rollback bookkeeping (scheduler.store.bucket_index)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scheduler.kafka.groups import GroupMember, GroupQueryFailed, Members
from scheduler.records import DueMessage
from scheduler.store.bucket_index import (
    Reconciler,
    backfill,
    old_releaser_has_led,
    old_writers,
    writer_client_id,
)
from scheduler.testing.fakes import InMemoryBucketStore

pytestmark = pytest.mark.unit
B = 1_893_499_200_000
GROUPS = ["scheduler-bucketer", "t.record-writer"]


class FakeGroups:
    """The groups' members by client id; `failing` makes the next query fail."""

    def __init__(self, **members: list[str]) -> None:
        self.members = members
        self.failing = False

    def describe(self, groups: Sequence[str]) -> Members:
        if self.failing:
            raise GroupQueryFailed("group query exited with -6")
        return {
            group: [GroupMember(c, "/10.0.0.7") for c in self.members.get(group, [])]
            for group in groups
        }


def message(n: int, due_ms: int) -> DueMessage:
    return DueMessage(
        message_id=f"M{n}",
        app_id="app",
        generation=0,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=0,
        payload_json="{}",
    )


def test_old_writers_are_the_members_without_the_tag() -> None:
    groups = FakeGroups(
        **{
            "scheduler-bucketer": [writer_client_id("bucketer"), "rdkafka"],
            "t.record-writer": [writer_client_id("record-writer")],
        }
    )
    assert old_writers(groups.describe(GROUPS)) == ["scheduler-bucketer/rdkafka@/10.0.0.7"]


def test_backfill_indexes_listed_buckets_from_the_watermark_and_marks_complete() -> None:
    store = InMemoryBucketStore()
    store.mark_index_incomplete()
    for bucket in (B - 60_000, B, B + 86_400_000):
        store.store_unindexed(bucket, 0, message(bucket, bucket + 1))
    store.advance_watermark(B, 0)
    result = backfill(store, now_ms=B)
    assert (result.indexed, result.below_watermark) == (2, 1)
    assert store.stored_buckets(0, B + 2 * 86_400_000, 10) == [B, B + 86_400_000]
    assert store.index_complete()


def test_the_backfill_waits_for_two_checks_in_a_row_without_an_old_writer() -> None:
    store = InMemoryBucketStore()
    store.mark_index_incomplete()
    store.store_unindexed(B, 0, message(1, B + 1))
    kafka = FakeGroups(**{"scheduler-bucketer": ["rdkafka"]})
    reconciler = Reconciler(store, kafka.describe, GROUPS)
    assert reconciler.check(B) is None  # an old bucketer runs
    kafka.members = {}
    assert reconciler.check(B) is None  # gone: once is not enough
    kafka.members = {"t.record-writer": ["rdkafka"]}  # an old dispatcher's writer is back
    assert reconciler.check(B) is None
    kafka.members = {}
    assert reconciler.check(B) is None
    assert not store.index_complete()
    result = reconciler.check(B)
    assert result is not None and result.indexed == 1
    assert store.index_complete()
    assert store.stored_buckets(0, B + 60_000, 10) == [B]


def test_an_old_writer_seen_again_makes_the_index_incomplete() -> None:
    store = InMemoryBucketStore()
    assert store.index_complete()
    Reconciler(store, FakeGroups(**{"t.record-writer": ["rdkafka"]}).describe, GROUPS).check(B)
    assert not store.index_complete()


def test_a_failed_group_query_breaks_the_run_of_clean_checks() -> None:
    """A query that could not look (its child aborted) proves nothing: the two clean checks
    the backfill waits for must be two answered ones in a row."""
    store = InMemoryBucketStore()
    store.mark_index_incomplete()
    kafka = FakeGroups()
    reconciler = Reconciler(store, kafka.describe, GROUPS)
    assert reconciler.check(B) is None  # first clean check
    kafka.failing = True
    with pytest.raises(GroupQueryFailed):
        reconciler.check(B)
    kafka.failing = False
    assert reconciler.check(B) is None  # one clean check again, not two
    assert not store.index_complete()
    assert reconciler.check(B) is not None
    assert store.index_complete()


def test_a_watermark_above_the_claim_means_an_old_releaser_led() -> None:
    store = InMemoryBucketStore()
    assert not old_releaser_has_led(store)  # nothing yet
    store.advance_watermark(B, 0)
    assert not old_releaser_has_led(store)  # never claimed: a watermark set before claims
    store.claim(B + 60_000, 0)
    store.advance_watermark(B + 60_000, 0)
    assert not old_releaser_has_led(store)  # this version: the claim covers the watermark
    store.advance_watermark(B + 120_000, 0)  # moved without a claim
    assert old_releaser_has_led(store)
