"""The CPU of a window read afterwards from the sampler's series, and a steady run's window."""

from __future__ import annotations

import pytest

from bench import resources
from bench.resources import Sampler
from bench.scenarios import LEAD_MS, steady_window_cpu

pytestmark = pytest.mark.unit


def sampler_with(series: list[tuple[int, dict[str, float]]]) -> Sampler:
    sampler = Sampler(dict)
    sampler._series = series
    return sampler


def test_the_cpu_of_a_window_is_interpolated_between_the_samples_around_it() -> None:
    sampler = sampler_with(
        [
            (1_000, {"kafka": 0.0}),
            (2_000, {"kafka": 1.0, "cassandra": 0.0}),  # cassandra appears: it had 0 before
            (3_000, {"kafka": 3.0, "cassandra": 2.0}),
        ]
    )
    assert sampler.cpu_between(1_500, 2_500) == {"kafka": 1.5, "cassandra": 1.0}
    assert sampler.cpu_between(1_000, 3_000) == {"kafka": 3.0, "cassandra": 2.0}
    assert sampler.cpu_between(2_000, 3_000) == {"kafka": 2.0, "cassandra": 2.0}
    # not covered by the samples, or empty: nothing rather than a guess
    assert sampler.cpu_between(500, 2_000) == {}
    assert sampler.cpu_between(2_000, 3_500) == {}
    assert sampler.cpu_between(2_000, 2_000) == {}


def test_samples_are_kept_against_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = {"a": 1.0}
    monkeypatch.setattr(resources, "cpu_seconds", lambda pid: cpu["a"])
    monkeypatch.setattr(resources, "rss_bytes", lambda pid: 1)
    times = iter([10_000, 11_000, 12_000])
    monkeypatch.setattr(resources.CLOCK, "now_ms", lambda: next(times))
    sampler = Sampler(lambda: {"a": 7})
    sampler._sample()  # the first sample of a pid is its zero
    cpu["a"] = 3.0
    sampler._sample()
    cpu["a"] = 4.0
    sampler._sample()
    assert sampler.cpu_between(10_000, 12_000) == {"a": 3.0}
    assert sampler.cpu_between(10_500, 11_000) == {"a": 1.0}


def test_a_steady_window_runs_from_the_first_due_to_the_last_schedule() -> None:
    # 1 message every 10 ms for 60 s: scheduled LEAD_MS before it is due
    planned = {f"m{i}": 1_000_000 + 10 * i for i in range(6_000)}
    asked: list[tuple[int, int]] = []

    def cpu_between(start_ms: int, end_ms: int) -> dict[str, float]:
        asked.append((start_ms, end_ms))
        return {"kafka": 1.0}

    window = steady_window_cpu(planned, cpu_between)
    end = 1_000_000 + 59_990 - LEAD_MS
    assert asked == [(1_000_000, end)]
    assert window == {
        "seconds": (end - 1_000_000) / 1000,
        "messages": (end - 1_000_000) // 10 + 1,
        "cpu_s": {"kafka": 1.0},
    }
    short = {f"m{i}": 1_000_000 + 10 * i for i in range(1_000)}  # 10 s: no steady window
    assert steady_window_cpu(short, cpu_between) == {}
