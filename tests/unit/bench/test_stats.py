"""The suite's figures: percentiles, medians over runs, per-second lateness, recovery time."""

from __future__ import annotations

import pytest

from bench.stats import (
    held_without_falling_behind,
    lateness_summary,
    median_summaries,
    per_second,
    percentile,
    recovery_s,
    spread,
)

pytestmark = pytest.mark.unit


def test_percentile_is_the_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.90) == 90
    assert percentile(values, 0.99) == 99  # not 100: 0.99 * 100 is 99.000...01 in floats
    assert percentile(values, 0.999) == 100
    assert percentile(values, 1.0) == 100
    assert percentile([7], 0.5) == 7
    assert percentile([1, 2], 0.0) == 1


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_lateness_summary_has_every_figure_and_sorts_first() -> None:
    summary = lateness_summary([30, 10, 20, 1000])
    assert summary == {
        "count": 4,
        "min": 10,
        "p50": 20,
        "p90": 1000,
        "p99": 1000,
        "p99.9": 1000,
        "max": 1000,
    }
    assert lateness_summary([]) == {"count": 0}


def test_spread_is_the_median_with_min_max_and_count() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert spread([1.0, 4.0]) == {"median": 2.5, "min": 1.0, "max": 4.0, "runs": 2}
    assert spread([]) == {"runs": 0}


def test_median_summaries_take_each_figure_over_the_runs() -> None:
    runs = [lateness_summary([10, 20]), lateness_summary([30, 40]), lateness_summary([50, 60])]
    out = median_summaries(runs)
    assert out["p50"] == {"median": 30, "min": 10, "max": 50, "runs": 3}
    assert out["max"] == {"median": 40, "min": 20, "max": 60, "runs": 3}
    assert median_summaries([]) == {}


def test_per_second_groups_by_due_second_from_the_origin() -> None:
    points = [(1_000, 5), (1_500, 9), (2_100, 50), (2_900, 10)]
    assert per_second(points, origin_ms=1_000) == [(0, 5, 9.0), (1, 10, 50.0)]


def test_recovery_is_the_first_second_after_which_lateness_stays_steady() -> None:
    seconds = [(s, 5.0, worst) for s, worst in enumerate([10, 10, 900, 400, 10, 300, 10, 10])]
    # killed at second 2: above 100 ms until second 5 included, steady from second 6
    assert recovery_s(seconds, kill_second=2, threshold_ms=100) == 4.0
    assert recovery_s(seconds, kill_second=6, threshold_ms=100) == 0.0


def test_recovery_that_never_settles_is_none() -> None:
    seconds = [(0, 5.0, 10.0), (1, 5.0, 500.0)]
    assert recovery_s(seconds, kill_second=0, threshold_ms=100) is None
    assert recovery_s(seconds, kill_second=5, threshold_ms=100) is None


def test_a_rate_is_held_when_the_last_messages_are_as_timely_as_the_first() -> None:
    # 60 s at 10/s, lateness 20 ms throughout
    points = [(i * 100, 20) for i in range(600)]
    assert held_without_falling_behind(points, 600, 10.0, 10, 10_000, 1_000) == (True, "")


def test_a_pipeline_falling_behind_is_seen_in_its_last_seconds() -> None:
    # lateness grows by 5 ms per message: 3 s late at the end, on time at the start
    points = [(i * 100, i * 5) for i in range(600)]
    held, why = held_without_falling_behind(points, 600, 10.0, 10, 10_000, 1_000)
    assert not held
    assert why.startswith("p99 of the last 10 s of due instants")


def test_a_rate_with_messages_missing_or_not_generated_is_not_held() -> None:
    points = [(i * 100, 20) for i in range(600)]
    assert held_without_falling_behind(points[:-1], 600, 10.0, 10, 10_000, 1_000) == (
        False,
        "1 of 600 not delivered",
    )
    held, why = held_without_falling_behind(points, 600, 9.0, 10, 10_000, 1_000)
    assert not held and "load generator reached only 9/s" in why
