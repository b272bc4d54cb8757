"""From scheduler.requests into Cassandra and the ring, with poison records, on the real stack."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.domain.buckets import bucket_start
from scheduler.domain.status import Status
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler_bucketer.metrics import BucketerMetrics

from .support import CLOCK, REQUESTS, Stack, wait_until

pytestmark = pytest.mark.integration


def test_requests_are_stored_or_routed_and_poison_is_rejected(stack: Stack) -> None:
    now = CLOCK.now_ms()
    far = [stack.request(now + 3_600_000 + i) for i in range(30)]
    ten_years = stack.request(now + 10 * 365 * 86_400_000)
    # Far beyond Cassandra's batch size limit: must be written on its own, not in a batch.
    big = stack.request(now + 7_200_000)
    big = replace(big, payload_json='{"blob": "' + "x" * 200_000 + '"}')
    near = [stack.request(now + 1_500) for _ in range(5)]
    past = stack.request(now - 60_000)
    poison = [
        b"garbage bytes",
        REQUESTS.encode(stack.request(now + 5_000, app_id="nobody")),
        REQUESTS.encode(stack.request(now + 5_000, app_id="app-deleted")),
        REQUESTS.encode(stack.request(1_700_000_000)),  # seconds, not milliseconds
    ]
    # Poison first, in the same partition (same key) as the valid records behind it.
    stack.produce(poison)
    stack.produce_requests([*far, ten_years, big, *near, past])

    with stack.bucketer_thread() as metrics:
        wait_until(lambda: len(stack.stored_ids()) == 32, 60, "32 stored rows")
        ring = stack.ring_messages(expected=6)
        rejected = stack.rejections(expected=4)
        wait_until(stack.committed_everything, 30, "offsets committed")
        partitions = {str(p) for p in range(stack.kafka.requests_partitions)}
        wait_until(
            lambda: lag_of(metrics, stack.topics.requests) == dict.fromkeys(partitions, 0.0),
            15,
            "consumer lag 0 reported for every requests partition",
        )

    assert sorted(stack.stored_ids()) == sorted(r.message_id for r in [*far, ten_years, big])
    assert sorted(m.message_id for m in ring) == sorted(r.message_id for r in [*near, past])
    assert {m.generation for m in ring} == {0} and {m.attempt for m in ring} == {1}
    assert sorted(r.reason for r in rejected) == sorted(
        ["not_avro", "unknown_app", "app_deleted", "invalid_sendAt"]
    )
    assert {r.original for r in rejected} == set(poison)

    messages = stack.messages
    for request in far:
        view = messages.get(request.app_id, request.message_id)
        assert view is not None and view.state.status is Status.READY
        assert view.content.payload_json == request.payload_json
        assert [e.status for e in messages.logs(request.app_id, request.message_id)] == [
            Status.READY
        ]
    for request in near:
        view = messages.get(request.app_id, request.message_id)
        assert view is not None and view.state.status is Status.QUEUED
    big_view = messages.get(big.app_id, big.message_id)
    assert big_view is not None and big_view.content.payload_json == big.payload_json
    assert metrics.stored._value.get() == 32
    # The bucket index holds every bucket with a stored row, written with the rows (batched).
    buckets = CassandraBucketStore(stack.session)
    width = stack.scheduling.bucket_width_ms
    assert buckets.stored_buckets(0, now + 11 * 365 * 86_400_000, 1_000) == sorted(
        {bucket_start(r.send_at_ms, width) for r in [*far, ten_years, big]}
    )


def lag_of(metrics: BucketerMetrics, topic: str) -> dict[str, float]:
    """The lag gauge's values per partition of `topic`, as reported so far."""
    return {
        sample.labels["partition"]: sample.value
        for family in metrics.consumer_lag.collect()
        for sample in family.samples
        if sample.labels["topic"] == topic
    }


def test_a_lagging_bucketer_sends_messages_of_released_buckets_directly(stack: Stack) -> None:
    """Decision 2: the releaser has passed a bucket (e.g. while this bucketer was down): its
    late-arriving messages go straight to the ring instead of being stranded in the table."""
    now = CLOCK.now_ms()
    released_up_to = now + 3_600_000
    CassandraBucketStore(stack.session).advance_watermark(released_up_to, now)
    behind = [stack.request(released_up_to - 10_000 + i) for i in range(3)]
    ahead = [stack.request(released_up_to + 60_000 + i) for i in range(3)]
    stack.produce_requests([*behind, *ahead])

    with stack.bucketer_thread() as metrics:
        wait_until(lambda: len(stack.stored_ids()) == 3, 60, "3 stored rows")
        ring = stack.ring_messages(expected=3)
        wait_until(stack.committed_everything, 30, "offsets committed")

    assert sorted(m.message_id for m in ring) == sorted(r.message_id for r in behind)
    assert sorted(stack.stored_ids()) == sorted(r.message_id for r in ahead)
    assert metrics.routed_direct.labels("released")._value.get() == 3
