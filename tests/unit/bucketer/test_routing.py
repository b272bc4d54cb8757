"""Routing: look-ahead and watermark boundaries, far future, past, re-check after storing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.testing.fakes import InMemoryBucketStore

from .harness import SCHEDULING, TEN_YEARS_MS, Harness

pytestmark = pytest.mark.unit


def test_message_within_the_lookahead_goes_to_its_ring_topic_as_queued() -> None:
    h = Harness()
    now = h.clock.now_ms()
    request = h.request(send_at_ms=now + 2_500)
    h.process(h.record(request))

    [(topic, due)] = h.direct()
    assert topic == h.topics.ring.topic_for(now + 2_500)
    assert (due.message_id, due.generation, due.attempt, due.due_ms) == (
        request.message_id,
        0,
        1,
        now + 2_500,
    )
    assert h.producer.records[0].key == request.message_id.encode()
    assert h.stored() == []
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is Status.QUEUED
    assert view.content.payload_json == request.payload_json
    [entry] = h.messages.logs("app-a", request.message_id)
    assert entry.status is Status.QUEUED and entry.data["topic"] == topic
    assert h.metric("scheduler_bucketer_routed_direct_total", cause="near") == 1


def test_ten_years_ahead_is_stored_ready_in_its_bucket_and_shard() -> None:
    h = Harness()
    send_at = h.clock.now_ms() + TEN_YEARS_MS + 123
    request = h.request(send_at_ms=send_at)
    h.process(h.record(request))

    assert h.direct() == []
    bucket = bucket_start(send_at, SCHEDULING.bucket_width_ms)
    shard = shard_of(request.message_id, SCHEDULING.shards_per_bucket)
    assert h.buckets.partitions(bucket) == [("app-a", shard)]
    [row] = list(h.buckets.read(bucket, "app-a", shard))
    assert (row.message_id, row.due_ms, row.generation, row.attempt) == (
        request.message_id,
        send_at,
        0,
        1,
    )
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is Status.READY
    assert view.state.due_ms == send_at
    assert h.metric("scheduler_bucketer_stored_total") == 1


def test_app_shard_count_overrides_the_default() -> None:
    h = Harness()
    h.apps.apps["app-a"] = replace(h.apps.apps["app-a"], shards=1)
    h.process(*(h.record(h.request(h.clock.now_ms() + 60_000)) for _ in range(20)))
    bucket = bucket_start(h.clock.now_ms() + 60_000, SCHEDULING.bucket_width_ms)
    assert h.buckets.partitions(bucket) == [("app-a", 0)]


@pytest.mark.parametrize(
    ("offset_ms", "expected_direct"),
    [
        (SCHEDULING.lookahead_ms - 1, True),  # last instant within the look-ahead
        (SCHEDULING.lookahead_ms, False),  # first instant beyond it (no watermark yet)
    ],
)
def test_lookahead_boundary_without_watermark(offset_ms: int, expected_direct: bool) -> None:
    h = Harness()
    h.clock.set(1_800_000_000_000)  # a bucket boundary
    h.process(h.record(h.request(h.clock.now_ms() + offset_ms)))
    assert bool(h.direct()) is expected_direct
    assert bool(h.stored()) is not expected_direct


@pytest.mark.parametrize(
    ("bucket_offset", "expected_direct"),
    [
        (-1, True),  # bucket below the watermark: released already
        (0, True),  # bucket at the watermark, within the margin
        (SCHEDULING.placement_margin_ms // SCHEDULING.bucket_width_ms - 1, True),
        (SCHEDULING.placement_margin_ms // SCHEDULING.bucket_width_ms, False),  # beyond margin
    ],
)
def test_watermark_boundary(bucket_offset: int, expected_direct: bool) -> None:
    h = Harness()
    now = 1_800_000_000_000
    h.clock.set(now)
    width = SCHEDULING.bucket_width_ms
    watermark = now + SCHEDULING.lookahead_ms + 2 * width  # well beyond the look-ahead
    h.buckets.advance_watermark(watermark, now)
    due = watermark + bucket_offset * width + width // 2
    h.process(h.record(h.request(due)))
    assert bool(h.direct()) is expected_direct
    assert bool(h.stored()) is not expected_direct
    released = h.metric("scheduler_bucketer_routed_direct_total", cause="released")
    assert released == (1 if expected_direct else 0)


def test_past_send_at_is_sent_now_to_the_current_slot_with_its_real_due_time() -> None:
    h = Harness()
    now = h.clock.now_ms()
    past = now - 3_600_000  # an hour ago, inside the 24 h past window
    request = h.request(send_at_ms=past, created_ms=now)
    h.process(h.record(request))

    [(topic, due)] = h.direct()
    assert topic == h.topics.ring.topic_for(now)
    assert due.due_ms == past
    assert h.stored() == []


class ReleasingWhileStoring(InMemoryBucketStore):
    """The releaser passes the bucket right while the bucketer stores into it."""

    def __init__(self, release_to_ms: int) -> None:
        super().__init__()
        self.release_to_ms = release_to_ms

    def store(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        super().store(bucket_ms, shard, message)
        self.advance_watermark(self.release_to_ms, 0)


def test_message_stored_into_a_bucket_released_meanwhile_is_also_sent() -> None:
    now = 1_800_000_000_000
    far = now + 60_000
    h = Harness(buckets=ReleasingWhileStoring(release_to_ms=far + 1_000))
    h.clock.set(now)
    request = h.request(send_at_ms=far)
    h.process(h.record(request))

    assert [m.message_id for m in h.stored()] == [request.message_id]
    [(topic, due)] = h.direct()
    assert topic == h.topics.ring.topic_for(far) and due.due_ms == far
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is Status.QUEUED
    assert h.metric("scheduler_bucketer_routed_direct_total", cause="released_meanwhile") == 1


def test_a_stored_message_in_an_unreleased_bucket_is_not_sent() -> None:
    h = Harness(buckets=ReleasingWhileStoring(release_to_ms=1))
    request = h.request(send_at_ms=h.clock.now_ms() + 60_000)
    h.process(h.record(request))
    assert h.direct() == []


def test_replaying_a_batch_changes_nothing() -> None:
    h = Harness()
    now = h.clock.now_ms()
    records = [h.record(h.request(now + 60_000 + i)) for i in range(5)]
    records.append(h.record(h.request(now + 10)))
    h.process(*records)
    h.process(*records)  # a crash before the commit: the same records again

    stored = h.stored()
    assert len(stored) == 5 and len({m.message_id for m in stored}) == 5
    for record in records:
        request = h.processor._intake.admit(record).request  # type: ignore[union-attr]
        assert len(h.messages.logs("app-a", request.message_id)) == 1
    assert len({due.message_id for _, due in h.direct()}) == 1


def test_a_message_repeated_within_a_batch_is_placed_once() -> None:
    h = Harness()
    request = h.request(h.clock.now_ms() + 1_000)
    h.process(h.record(request), h.record(request))
    assert len(h.direct()) == 1
