"""Contract of BucketStore (scheduler.store.ports), for the fake and the Cassandra adapter."""

from __future__ import annotations

from scheduler.records import DueMessage
from scheduler.store.ports import BucketStore

B = 1_893_499_200_000  # a bucket start


def due(message_id: str, due_ms: int, app: str = "app-a", generation: int = 0) -> DueMessage:
    return DueMessage(
        message_id=message_id,
        app_id=app,
        generation=generation,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=B - 86_400_000,
        payload_json='{"k": [1, 2]}',
        kafka_key=None,
    )


def test_store_is_idempotent_and_reads_in_due_order(bucket_store: BucketStore) -> None:
    messages = [due(f"M{i:02d}", B + (7 * i) % 60_000) for i in range(20)]
    for message in messages + messages:
        bucket_store.store(B, 3, message)
    read = list(bucket_store.read(B, "app-a", 3))
    assert read == sorted(messages, key=lambda m: (m.due_ms, m.message_id))


def test_partitions_of_a_bucket(bucket_store: BucketStore) -> None:
    bucket_store.store(B, 1, due("A1", B + 1))
    bucket_store.store(B, 0, due("A0", B + 2))
    bucket_store.store(B, 0, due("B0", B + 3, app="app-b"))
    bucket_store.store(B + 60_000, 5, due("C5", B + 60_001, app="app-c"))
    assert bucket_store.partitions(B) == [("app-a", 0), ("app-a", 1), ("app-b", 0)]
    assert bucket_store.partitions(B + 60_000) == [("app-c", 5)]
    assert bucket_store.partitions(B - 60_000) == []
    assert list(bucket_store.read(B, "app-c", 5)) == []


def test_remove_and_drop(bucket_store: BucketStore) -> None:
    keep, gone = due("K", B + 10), due("G", B + 20)
    bucket_store.store(B, 2, keep)
    bucket_store.store(B, 2, gone)
    bucket_store.remove(B, 2, gone)
    assert list(bucket_store.read(B, "app-a", 2)) == [keep]
    bucket_store.drop_partition(B, "app-a", 2)
    assert list(bucket_store.read(B, "app-a", 2)) == []
    assert bucket_store.partitions(B) == []


def test_large_partitions_are_read_completely(bucket_store: BucketStore) -> None:
    messages = [due(f"L{i:05d}", B + i % 60_000) for i in range(2_500)]
    for message in messages:
        bucket_store.store(B, 0, message)
    assert list(bucket_store.read(B, "app-a", 0)) == sorted(
        messages, key=lambda m: (m.due_ms, m.message_id)
    )


def test_watermark_only_moves_forward(bucket_store: BucketStore) -> None:
    assert bucket_store.watermark() == 0
    bucket_store.advance_watermark(B, now_ms=B - 300_000)
    assert bucket_store.watermark() == B
    bucket_store.advance_watermark(B - 60_000, now_ms=B - 200_000)
    assert bucket_store.watermark() == B
    bucket_store.advance_watermark(B + 60_000, now_ms=B - 100_000)
    assert bucket_store.watermark() == B + 60_000


# -- the index of non-empty buckets and the release claim ---------------------------------------

DAY = 86_400_000


def test_a_store_indexes_its_bucket_and_the_index_lists_only_non_empty_buckets(
    bucket_store: BucketStore,
) -> None:
    far = B + 2_000 * DAY  # another era of days (1,024 days per era)
    for bucket in (B + DAY, B, far, B + 60_000):
        bucket_store.store(bucket, 0, due(f"I{bucket}", bucket + 5))
    bucket_store.store(B, 1, due("again", B + 7))  # a second partition of a bucket: one entry
    assert bucket_store.stored_buckets(0, far + 1, 100) == [B, B + 60_000, B + DAY, far]
    assert bucket_store.stored_buckets(B + 1, far, 100) == [B + 60_000, B + DAY]
    assert bucket_store.stored_buckets(B, B + DAY, 1) == [B]
    assert bucket_store.stored_buckets(B + 2 * DAY, far, 100) == []
    assert bucket_store.stored_buckets(far, far, 100) == []


def test_forgetting_a_day_drops_only_that_days_entries(bucket_store: BucketStore) -> None:
    bucket_store.store(B, 0, due("day0", B + 1))
    bucket_store.store(B + DAY, 0, due("day1", B + DAY + 1))
    bucket_store.forget_day(B // DAY)
    assert bucket_store.stored_buckets(0, B + 2 * DAY, 100) == [B + DAY]
    assert list(bucket_store.read(B, "app-a", 0)) == [due("day0", B + 1)]  # rows stay


def test_the_upgrade_backfill_reads_every_listed_bucket_and_indexes_one(
    bucket_store: BucketStore,
) -> None:
    bucket_store.store(B, 0, due("x", B + 1))
    bucket_store.store(B + 60_000, 3, due("y", B + 60_001))
    assert sorted(bucket_store.listed_buckets()) == [B, B + 60_000]
    bucket_store.forget_day(B // DAY)
    bucket_store.index_bucket(B + 60_000)
    bucket_store.index_bucket(B + 60_000)  # idempotent
    assert bucket_store.stored_buckets(0, B + DAY, 100) == [B + 60_000]


def test_a_new_store_has_a_complete_index(bucket_store: BucketStore) -> None:
    assert bucket_store.index_complete()
    bucket_store.mark_index_complete(B)  # idempotent
    assert bucket_store.index_complete()


def test_the_claim_only_grows_and_covers_the_watermark(bucket_store: BucketStore) -> None:
    assert bucket_store.claimed_up_to() == 0
    bucket_store.claim(B, now_ms=B - 300_000)
    assert bucket_store.claimed_up_to() == B
    bucket_store.claim(B - 60_000, now_ms=B - 200_000)  # a stale releaser's lower claim
    assert bucket_store.claimed_up_to() == B
    assert bucket_store.watermark() == 0  # the claim is not progress
    bucket_store.advance_watermark(B + 60_000, now_ms=B - 100_000)
    assert bucket_store.claimed_up_to() == B + 60_000
    bucket_store.claim(B + 120_000, now_ms=B)
    assert bucket_store.claimed_up_to() == B + 120_000
    assert bucket_store.watermark() == B + 60_000
