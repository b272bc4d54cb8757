"""The bucketer adds the messages it stores to the approximate pending counts (per bucket),
and a failing count write never fails the batch."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from scheduler.domain.buckets import bucket_start
from scheduler.store.pending_counts import InMemoryPendingCounts, day_of
from scheduler_bucketer.pipeline import Ports, build_processor
from scheduler_bucketer.settings import BucketerSettings

from .harness import SCHEDULING, TEN_YEARS_MS, Harness

pytestmark = pytest.mark.unit
WIDTH = SCHEDULING.bucket_width_ms


class BrokenCounts(InMemoryPendingCounts):
    def add(self, stored: Mapping[int, int]) -> None:
        raise RuntimeError("counter write timed out")


def with_counts(counts: InMemoryPendingCounts) -> Harness:
    h = Harness()
    h.processor = build_processor(
        Ports(h.messages, h.buckets, h.apps, h.producer, h.clock, pending=counts),
        h.topics,
        SCHEDULING,
        BucketerSettings(watermark_cache_ms=0, app_cache_ms=0),
        h.metrics,
        h.writer,
    )
    return h


def test_stored_messages_are_counted_per_bucket_and_direct_ones_are_not() -> None:
    counts = InMemoryPendingCounts()
    h = with_counts(counts)
    now = h.clock.now_ms()
    far = now + 60_000
    h.process(
        h.record(h.request(far)),
        h.record(h.request(far + 1)),
        h.record(h.request(now + TEN_YEARS_MS)),
        h.record(h.request(now + 1_000)),  # within the look-ahead: straight to the ring
    )
    assert len(h.stored()) == 3
    assert counts.buckets_of_day(day_of(far)) == [(bucket_start(far, WIDTH), 2)]
    ten_years = bucket_start(now + TEN_YEARS_MS, WIDTH)
    assert counts.buckets_of_day(day_of(ten_years)) == [(ten_years, 1)]


def test_a_failing_count_write_is_counted_and_the_batch_still_succeeds() -> None:
    h = with_counts(BrokenCounts())
    request = h.request(h.clock.now_ms() + 60_000)
    h.process(h.record(request))  # does not raise: the batch commits
    assert [m.message_id for m in h.stored()] == [request.message_id]
    assert h.metric("scheduler_bucketer_pending_count_failures_total") == 1
