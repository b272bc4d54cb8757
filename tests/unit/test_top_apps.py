"""The bounded per-application label set: admission, "other", re-ranking per window, eviction
of series (time from a ManualClock)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.top_apps import OTHER, AppCounter, TopApps, TopAppsSettings

pytestmark = pytest.mark.unit

WINDOW_MS = 60_000


def counter(size: int, clock: ManualClock) -> tuple[AppCounter, CollectorRegistry]:
    registry = CollectorRegistry()
    top = TopApps(clock, size, WINDOW_MS)
    return AppCounter("t_app_events", "test", ["outcome"], registry, top), registry


def series(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.labels["app"], s.labels["outcome"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "t_app_events_total"
    }


def test_apps_are_admitted_while_there_is_room_then_counted_as_other() -> None:
    clock = ManualClock()
    c, registry = counter(2, clock)
    c.inc("a", "sent")
    c.inc("b", "sent", n=3)
    c.inc("c", "sent")
    c.inc("c", "failed")
    assert series(registry) == {
        ("a", "sent"): 1,
        ("b", "sent"): 3,
        (OTHER, "sent"): 1,
        (OTHER, "failed"): 1,
    }


def test_the_window_ranks_the_busiest_apps_and_removes_the_series_of_the_others() -> None:
    clock = ManualClock()
    c, registry = counter(2, clock)
    c.inc("a", "sent")  # a and b take the two places first
    c.inc("b", "sent")
    c.inc("c", "sent", n=10)  # the busiest, but counted as other until the window ends
    c.inc("b", "sent", n=5)
    clock.advance(WINDOW_MS - 1)
    c.inc("a", "sent")
    assert {app for app, _ in series(registry)} == {"a", "b", OTHER}

    clock.advance(1)  # window over: b (6) and c (10) rank, a (2) leaves
    c.inc("c", "sent")
    assert series(registry) == {("b", "sent"): 6, ("c", "sent"): 1, (OTHER, "sent"): 10}


def test_an_app_without_events_in_a_window_leaves_and_restarts_from_zero() -> None:
    clock = ManualClock()
    c, registry = counter(1, clock)
    c.inc("a", "sent", n=4)
    clock.advance(WINDOW_MS)
    c.inc("b", "sent")  # the roll ranks nobody from the window but a: a stays
    assert series(registry) == {("a", "sent"): 4, (OTHER, "sent"): 1}
    clock.advance(WINDOW_MS)  # b was the only app of the last window
    c.inc("b", "sent")
    assert series(registry) == {("b", "sent"): 1, (OTHER, "sent"): 1}
    clock.advance(WINDOW_MS)
    c.inc("a", "sent")  # b had one event: it keeps its place, a is other now
    assert series(registry) == {("b", "sent"): 1, (OTHER, "sent"): 2}


def test_the_number_of_series_stays_bounded_whatever_the_number_of_apps() -> None:
    clock = ManualClock()
    c, registry = counter(5, clock)
    for round_ in range(20):
        for i in range(200):
            c.inc(f"app-{round_}-{i}", "sent", n=1 + i % 7)
            c.inc(f"app-{round_}-{i}", "failed")
        clock.advance(WINDOW_MS)
        apps = {app for app, _ in series(registry)}
        assert len(apps - {OTHER}) <= 5
        assert len(series(registry)) <= 5 * 2 + 2


def test_a_heavy_app_arriving_after_the_tally_is_full_is_still_ranked() -> None:
    clock = ManualClock()
    top = TopApps(clock, 2, WINDOW_MS)  # tallies at most 8 apps per window
    for i in range(8):
        top.label(f"small-{i}")
    top.label("heavy", 100)
    clock.advance(WINDOW_MS)
    top.label("x")
    assert "heavy" in top.ranked


def test_zero_top_apps_counts_everything_as_other() -> None:
    clock = ManualClock()
    c, registry = counter(0, clock)
    c.inc("a", "sent")
    clock.advance(WINDOW_MS)
    c.inc("a", "sent")
    assert series(registry) == {(OTHER, "sent"): 2}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_METRICS_TOP_APPS", "7")
    assert TopAppsSettings().top_apps == 7
    assert TopAppsSettings().top_apps_window_ms == 300_000
