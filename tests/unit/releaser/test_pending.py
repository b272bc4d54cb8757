"""The pending-by-horizon gauge: classes by bucket start, only buckets at or after the
watermark, the per-day counts beyond a week, the refresh interval and the clean-up of released
days (a ManualClock, in-memory counts)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.settings import DAY_MS, SchedulingSettings
from scheduler.store.pending_counts import InMemoryPendingCounts, day_of
from scheduler.testing.fakes import InMemoryBucketStore
from scheduler_releaser.metrics import ReleaseMetrics
from scheduler_releaser.releaser.pending import (
    HORIZONS,
    MAX_BEHIND_DAYS,
    REFRESH_MS,
    PendingByHorizon,
    horizon_of,
)

pytestmark = pytest.mark.unit

MINUTE = 60_000
HOUR = 60 * MINUTE
WEEK = 7 * DAY_MS
YEAR = 365 * DAY_MS


class FlakyCounts(InMemoryPendingCounts):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False
        self.reads = 0

    def buckets_of_day(self, day: int) -> list[tuple[int, int]]:
        self.reads += 1
        if self.fail:
            raise RuntimeError("cassandra down")
        return super().buckets_of_day(day)


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()  # 2026-01-01T00:00:00Z: a day boundary
        self.counts = FlakyCounts()
        self.buckets = InMemoryBucketStore()
        self.registry = CollectorRegistry()
        self.gauge = PendingByHorizon(
            counts=self.counts,
            buckets=self.buckets,
            clock=self.clock,
            scheduling=SchedulingSettings(),
            metrics=ReleaseMetrics(self.registry),
        )

    def now(self) -> int:
        return self.clock.now_ms()

    def exported(self) -> dict[str, float]:
        return {
            s.labels["horizon"]: s.value
            for family in self.registry.collect()
            for s in family.samples
            if s.name == "scheduler_release_pending_messages"
        }


@pytest.mark.parametrize(
    ("ahead_ms", "label"),
    [
        (0, "<1m"),
        (MINUTE - 1, "<1m"),
        (MINUTE, "<1h"),
        (HOUR, "<1d"),
        (DAY_MS - 1, "<1d"),
        (DAY_MS, "<7d"),
        (WEEK - 1, "<7d"),
        (WEEK, ">=7d"),
        (50 * YEAR, ">=7d"),
    ],
)
def test_horizon_classes(ahead_ms: int, label: str) -> None:
    assert horizon_of(ahead_ms) == label


def test_counts_by_bucket_start_from_the_watermark_on() -> None:
    w = World()
    now = w.now()
    watermark = now + 5 * MINUTE
    w.buckets.advance_watermark(watermark, now)
    w.counts.add(
        {
            now - MINUTE: 100,  # released (before the watermark): not pending any more
            watermark - MINUTE: 50,  # released
            watermark: 3,  # 5 minutes ahead
            now + 2 * HOUR: 4,
            now + DAY_MS + HOUR: 5,  # tomorrow
            now + WEEK - MINUTE: 6,  # last bucket under a week
            now + WEEK: 7,  # a week ahead, same day as the previous rows' week-day
            now + WEEK + DAY_MS: 8,  # beyond: from the per-day counts
            now + 3 * YEAR: 9,  # another period of days
        }
    )
    assert w.gauge.refresh() == {"<1m": 0, "<1h": 3, "<1d": 4, "<7d": 11, ">=7d": 24}
    assert w.exported() == {"<1m": 0, "<1h": 3, "<1d": 4, "<7d": 11, ">=7d": 24}


def test_an_overdue_bucket_counts_as_less_than_a_minute() -> None:
    w = World()
    now = w.now()
    w.buckets.advance_watermark(now - 10 * MINUTE, now)  # the releaser is behind
    w.counts.add({now - 5 * MINUTE: 2, now + 30_000: 1})
    assert w.gauge.refresh()["<1m"] == 3


def test_a_releaser_far_behind_reads_a_bounded_number_of_days() -> None:
    w = World()
    now = w.now()
    w.buckets.advance_watermark(now - 30 * DAY_MS, now)
    w.counts.add({now - 20 * DAY_MS: 5, now - 2 * DAY_MS: 1})
    assert w.gauge.refresh()["<1m"] == 1  # 20 days behind is beyond MAX_BEHIND_DAYS
    assert w.counts.reads == MAX_BEHIND_DAYS + 7 + 1


def test_no_watermark_yet_reads_from_the_recent_days() -> None:
    w = World()
    now = w.now()
    w.counts.add({now + HOUR: 2})
    assert w.gauge.refresh()["<1d"] == 2
    assert w.counts.reads == MAX_BEHIND_DAYS + 7 + 1


def test_refresh_happens_once_per_interval_and_a_failure_keeps_the_last_values() -> None:
    w = World()
    now = w.now()
    w.buckets.advance_watermark(now + 5 * MINUTE, now)
    w.counts.add({now + 2 * HOUR: 2})
    assert w.gauge.maybe_refresh()
    assert w.exported()["<1d"] == 2
    w.counts.add({now + 2 * HOUR: 1})
    w.clock.advance(REFRESH_MS - 1)
    assert not w.gauge.maybe_refresh()
    assert w.exported()["<1d"] == 2
    w.clock.advance(1)
    assert w.gauge.maybe_refresh()
    assert w.exported()["<1d"] == 3

    w.counts.fail = True
    w.counts.add({now + 2 * HOUR: 1})
    w.clock.advance(REFRESH_MS)
    assert not w.gauge.maybe_refresh()
    assert w.exported()["<1d"] == 3  # unchanged, not dropped
    w.counts.fail = False
    w.clock.advance(REFRESH_MS)
    assert w.gauge.maybe_refresh()
    assert w.exported()["<1d"] == 4


def test_clear_drops_the_series_and_the_next_call_refreshes_at_once() -> None:
    w = World()
    w.buckets.advance_watermark(w.now(), w.now())
    assert w.gauge.maybe_refresh()
    assert set(w.exported()) == {label for label, _ in HORIZONS}
    w.gauge.clear()  # lease lost: a standby exports nothing
    assert w.exported() == {}
    assert w.gauge.maybe_refresh()
    assert len(w.exported()) == len(HORIZONS)


def test_days_wholly_released_are_forgotten_once() -> None:
    w = World()
    now = w.now()
    today = day_of(now)
    for back in range(12):
        w.counts.add({now - back * DAY_MS: 1})
    w.counts.add({now + HOUR: 1})
    w.buckets.advance_watermark(now + 5 * MINUTE, now)
    w.gauge.refresh()
    # Today and yesterday are kept; the previous week is cleaned up; older days are left alone.
    kept = {d for d in range(today - 12, today + 1) if w.counts.buckets_of_day(d)}
    assert kept == {today, today - 1} | set(range(today - 11, today - 8))
    w.counts.add({now - 2 * DAY_MS: 1})  # a late count into a released day: never read again
    w.clock.advance(DAY_MS)
    w.buckets.advance_watermark(now + DAY_MS + 5 * MINUTE, now + DAY_MS)
    w.gauge.refresh()
    assert not w.counts.buckets_of_day(today - 1)  # the next day is forgotten in turn
    assert w.counts.buckets_of_day(today - 2)  # not forgotten twice
