"""The usage chart's geometry (pure)."""

from __future__ import annotations

import pytest

from scheduler.store.usage import UsageDay
from scheduler_ingest.console.chart import PLOT_H, usage_chart

pytestmark = pytest.mark.unit

DAY = 20_454  # 2026-01-01


def test_every_day_of_the_range_oldest_first_with_zeros() -> None:
    chart = usage_chart([UsageDay(DAY, 4, 2, 1)], DAY - 2, DAY)
    assert [d.day for d in chart.days] == [DAY - 2, DAY - 1, DAY]
    assert chart.dates == ("2025-12-30", "2025-12-31", "2026-01-01")
    assert chart.rows == [("2026-01-01", UsageDay(DAY, 4, 2, 1))]
    assert len(chart.bars) == 9


def test_bars_scale_to_the_highest_value() -> None:
    chart = usage_chart([UsageDay(DAY, 100, 50, 0), UsageDay(DAY - 1, 1, 0, 0)], DAY - 1, DAY)
    heights = {(b.date, b.series): b.height for b in chart.bars}
    assert heights[("2026-01-01", "ingested")] == PLOT_H
    assert heights[("2026-01-01", "sent")] == PLOT_H // 2
    assert heights[("2026-01-01", "failed")] == 0
    assert heights[("2025-12-31", "ingested")] == 2  # small but visible
    for bar in chart.bars:
        assert bar.y + bar.height == chart.baseline
    assert max(b.x for b in chart.bars) < chart.width


def test_no_counts_is_an_empty_chart() -> None:
    chart = usage_chart([], DAY - 29, DAY)
    assert chart.empty and chart.rows == [] and all(b.height == 0 for b in chart.bars)
    assert len(chart.days) == 30
