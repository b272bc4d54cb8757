"""Pure figures: percentiles, medians over runs, per-second lateness, recovery time."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank on sorted values: the smallest value with at least q of them at or below."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))  # 1e-9: 0.99 * 100 is 99.00000000000001
    return ordered[min(len(ordered), rank) - 1]


def lateness_summary(values: Iterable[float]) -> dict[str, float]:
    """count, p50, p90, p99, p99.9, max (and min, to show nothing was early)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    out: dict[str, float] = {"count": len(ordered), "min": ordered[0]}
    out.update({name: percentile(ordered, q) for name, q in QUANTILES.items()})
    out["max"] = ordered[-1]
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    """The median of several runs with their min and max, and how many runs."""
    if not values:
        return {"runs": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def median_summaries(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per figure (p50, p99, ...), the spread over runs that delivered something."""
    keys = [k for k in ("count", *QUANTILES, "max") if all(k in r for r in runs)]
    return {k: spread([r[k] for r in runs]) for k in keys} if runs else {}


def per_second(points: Iterable[tuple[int, int]], origin_ms: int) -> list[tuple[int, float, float]]:
    """(due ms, lateness ms) -> per due second since origin: (second, p50, max)."""
    by_second: dict[int, list[int]] = defaultdict(list)
    for due_ms, late_ms in points:
        by_second[(due_ms - origin_ms) // 1000].append(late_ms)
    out = []
    for second in sorted(by_second):
        ordered = sorted(by_second[second])
        out.append((second, percentile(ordered, 0.5), float(ordered[-1])))
    return out


def recovery_s(
    seconds: Sequence[tuple[int, float, float]], kill_second: int, threshold_ms: float
) -> float | None:
    """Seconds from the kill until lateness is steady again: the first due second after the
    kill from which every later second's max lateness stays within threshold_ms. None if it
    never settles within the run."""
    after = [s for s in seconds if s[0] >= kill_second]
    if not after:
        return None
    settled: int | None = None
    for second, _, worst in after:
        if worst > threshold_ms:
            settled = None
        elif settled is None:
            settled = second
    if settled is None:
        return None
    return float(settled - kill_second)


def held_without_falling_behind(
    points: Iterable[tuple[int, int]],
    planned: int,
    achieved_rate: float,
    rate: int,
    tail_ms: int,
    behind_ms: int,
) -> tuple[bool, str]:
    """Was `rate` held? Every message delivered, the load generator within 5 % of the rate, and
    the messages due in the last `tail_ms` no later than `behind_ms` at their p99 (a pipeline
    falling behind grows its lateness toward the end of the run). Returns (held, why not)."""
    points = list(points)
    if len(points) < planned:
        return False, f"{planned - len(points):,} of {planned:,} not delivered"
    if achieved_rate < 0.95 * rate:
        return False, f"the load generator reached only {achieved_rate:,.0f}/s"
    last_due = max(due for due, _ in points)
    tail = sorted(late for due, late in points if due > last_due - tail_ms)
    p99 = percentile(tail, 0.99)
    if p99 > behind_ms:
        return False, f"p99 of the last {tail_ms // 1000} s of due instants {p99:,.0f} ms"
    return True, ""
