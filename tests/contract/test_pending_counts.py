"""Contract of PendingCounts (scheduler.store.pending_counts), for the fake and the Cassandra
adapter. Counter rows cannot be reset reliably, so every run uses days no other run used."""

from __future__ import annotations

import random

import pytest

from scheduler.settings import DAY_MS
from scheduler.store.pending_counts import (
    PERIOD_DAYS,
    PendingCounts,
    day_of,
    period_of,
)

MINUTE = 60_000


@pytest.fixture
def first_day() -> int:
    """A fresh period-aligned day, thousands of years ahead."""
    return random.randrange(100, 10_000) * 10 * PERIOD_DAYS


def test_counts_add_up_per_bucket_and_per_day(
    pending_counts: PendingCounts, first_day: int
) -> None:
    day = first_day * DAY_MS
    pending_counts.add({day + 2 * MINUTE: 3, day: 1, day + DAY_MS: 5})
    pending_counts.add({day: 2, day + 5 * MINUTE: 0})  # a zero adds no row
    assert pending_counts.buckets_of_day(first_day) == [(day, 3), (day + 2 * MINUTE, 3)]
    assert pending_counts.buckets_of_day(first_day + 1) == [(day + DAY_MS, 5)]
    assert pending_counts.days_of_period(period_of(first_day)) == [
        (first_day, 6),
        (first_day + 1, 5),
    ]
    assert pending_counts.buckets_of_day(first_day + 2) == []


def test_a_day_in_the_next_period_is_in_that_period(
    pending_counts: PendingCounts, first_day: int
) -> None:
    last = first_day + PERIOD_DAYS - 1
    pending_counts.add({last * DAY_MS: 1, (last + 1) * DAY_MS: 2})
    assert pending_counts.days_of_period(period_of(first_day)) == [(last, 1)]
    assert pending_counts.days_of_period(period_of(last + 1)) == [(last + 1, 2)]
    assert day_of((last + 1) * DAY_MS) == last + 1


def test_forget_day_drops_its_buckets_and_its_day_row(
    pending_counts: PendingCounts, first_day: int
) -> None:
    day = first_day * DAY_MS
    pending_counts.add({day: 1, day + MINUTE: 1, day + DAY_MS: 4})
    pending_counts.forget_day(first_day)
    assert pending_counts.buckets_of_day(first_day) == []
    assert pending_counts.days_of_period(period_of(first_day)) == [(first_day + 1, 4)]
    assert pending_counts.buckets_of_day(first_day + 1) == [(day + DAY_MS, 4)]


def test_one_add_spread_over_many_buckets_and_days(
    pending_counts: PendingCounts, first_day: int
) -> None:
    """A bucketer batch of far-horizon messages touches many buckets: all are counted (the
    adapter splits them into bounded single-partition batches)."""
    day = first_day * DAY_MS
    stored = {day + i * MINUTE: 1 + i % 3 for i in range(1_440)}  # every bucket of one day
    stored |= {day + d * DAY_MS: 2 for d in range(1, 250)}  # and 249 more days
    pending_counts.add(stored)
    assert pending_counts.buckets_of_day(first_day) == sorted(
        (b, n) for b, n in stored.items() if day_of(b) == first_day
    )
    days = dict(pending_counts.days_of_period(period_of(first_day)))
    assert days[first_day] == sum(1 + i % 3 for i in range(1_440))
    assert len(days) == 250 and days[first_day + 249] == 2
