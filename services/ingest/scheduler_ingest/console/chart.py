"""The usage chart: per-day bars (ingested, sent, failed), computed here and drawn as inline SVG
by the template. Pure: days in, geometry out; no I/O, no clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.store.usage import DAY_MS, UsageDay

SERIES = ("ingested", "sent", "failed")
BAR_W = 6
GROUP_GAP = 6
PLOT_H = 160
TOP = 10
LEFT = 44  # room for the axis labels
RIGHT = 24  # room for the last date label (larger on phones, where the chart is scaled down)
LABEL_EVERY = 7  # a date under every seventh day


@dataclass(frozen=True)
class Bar:
    series: str
    x: int
    y: int
    height: int
    value: int
    date: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    baseline: int
    max_value: int
    bars: tuple[Bar, ...]
    labels: tuple[tuple[int, str], ...]  # (x, "MM-DD")
    days: tuple[UsageDay, ...]  # oldest first, every day of the range
    dates: tuple[str, ...]  # "YYYY-MM-DD" of each day

    @property
    def empty(self) -> bool:
        return self.max_value == 0

    @property
    def rows(self) -> list[tuple[str, UsageDay]]:
        """(date, counts) of the days with counts, newest first: the table under the chart."""
        return [
            (date, d)
            for date, d in zip(reversed(self.dates), reversed(self.days), strict=True)
            if d.ingested or d.sent or d.failed
        ]


def day_date(day: int) -> str:
    return format_rfc3339_ms(day * DAY_MS)[:10]


def usage_chart(counted: Sequence[UsageDay], first_day: int, last_day: int) -> Chart:
    """Every day of [first_day, last_day], oldest first; days without counts are zeros."""
    by_day = {d.day: d for d in counted}
    days = tuple(by_day.get(day, UsageDay(day)) for day in range(first_day, last_day + 1))
    top = max((max(d.ingested, d.sent, d.failed) for d in days), default=0)
    group_w = BAR_W * len(SERIES) + GROUP_GAP
    baseline = TOP + PLOT_H
    bars: list[Bar] = []
    labels: list[tuple[int, str]] = []
    for i, d in enumerate(days):
        x0 = LEFT + i * group_w
        date = day_date(d.day)
        for k, series in enumerate(SERIES):
            value = int(getattr(d, series))
            h = 0 if top == 0 else max(1 if value else 0, round(value * PLOT_H / top))
            bars.append(Bar(series, x0 + k * BAR_W, baseline - h, h, value, date))
        if i % LABEL_EVERY == 0:
            labels.append((x0, date[5:]))
    return Chart(
        width=LEFT + len(days) * group_w + RIGHT,
        height=baseline + 24,
        baseline=baseline,
        max_value=top,
        bars=tuple(bars),
        labels=tuple(labels),
        days=days,
        dates=tuple(day_date(d.day) for d in days),
    )
