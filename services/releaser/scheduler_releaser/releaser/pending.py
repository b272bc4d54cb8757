"""The pending-by-horizon gauge: stored messages not yet released, by how far ahead they are due.

Computed by the leading releaser every REFRESH_MS from the approximate per-bucket and per-day
counts the bucketer maintains (scheduler.store.pending_counts), never from the message rows:

- buckets from the release watermark up to now + 7 days: the per-bucket rows of each UTC day in
  that range (a week holds at most 8 x 1,440 rows with 1-minute buckets);
- beyond: the per-day rows, one partition per 1,024 days, up to the farthest accepted sendAt.

So a refresh reads a bounded number of small partitions (about 45 with the defaults) whatever
the number of pending messages. A message's horizon is the start of its bucket minus now (an
overdue bucket, releaser behind, counts as "<1m"). Messages already in the ring (due within the
look-ahead) are not in Cassandra: the dispatcher's held/ring-lag gauges show those.
"""

from __future__ import annotations

import logging

from scheduler.clock import Clock
from scheduler.settings import DAY_MS, SchedulingSettings
from scheduler.store.pending_counts import PendingCounts, day_of, period_of
from scheduler.store.ports import BucketStore
from scheduler_releaser.metrics import ReleaseMetrics

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
WEEK_MS = 7 * DAY_MS
REFRESH_MS = 30_000
# (label, exclusive upper bound of the horizon); the last class is unbounded.
HORIZONS: tuple[tuple[str, int | None], ...] = (
    ("<1m", MINUTE_MS),
    ("<1h", HOUR_MS),
    ("<1d", DAY_MS),
    ("<7d", WEEK_MS),
    (">=7d", None),
)
FORGET_LOOKBACK_DAYS = 7  # first refresh of a process: clean up this many released days
# A releaser this far behind is an incident of its own (SchedulerReleaserBehind); older buckets
# are left out rather than letting one refresh read an unbounded number of days.
MAX_BEHIND_DAYS = 8


def horizon_of(ahead_ms: int) -> str:
    for label, bound in HORIZONS:
        if bound is None or ahead_ms < bound:
            return label
    raise AssertionError("unreachable: the last horizon is unbounded")


class PendingByHorizon:
    """`maybe_refresh()` on every leader tick; `clear()` when the lease is lost, so only the
    leader exports the gauge (dashboards take the max over releasers)."""

    def __init__(
        self,
        *,
        counts: PendingCounts,
        buckets: BucketStore,
        clock: Clock,
        scheduling: SchedulingSettings,
        metrics: ReleaseMetrics,
        refresh_ms: int = REFRESH_MS,
    ) -> None:
        self._counts = counts
        self._buckets = buckets
        self._clock = clock
        self._scheduling = scheduling
        self._metrics = metrics
        self._refresh_ms = refresh_ms
        self._next_at: float | None = None
        self._forgotten_before: int | None = None  # every day before this one was forgotten

    def maybe_refresh(self) -> bool:
        """Refresh when due (the first call always is). A failed read keeps the last values."""
        now = self._clock.monotonic_ms()
        if self._next_at is not None and now < self._next_at:
            return False
        self._next_at = now + self._refresh_ms
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a gauge must not fail the release tick
            log.warning(
                "pending-by-horizon refresh failed (%s); next try in %d ms", exc, self._refresh_ms
            )
            return False
        return True

    def refresh(self) -> dict[str, int]:
        now = self._clock.now_ms()
        watermark = self._buckets.watermark()
        totals = self.count(now, watermark)
        for label, n in totals.items():
            self._metrics.pending.labels(label).set(n)
        if watermark > 0:  # 0: no release yet, nothing to clean up
            self._forget_released_days(watermark)
        return totals

    def count(self, now: int, watermark: int) -> dict[str, int]:
        totals = {label: 0 for label, _ in HORIZONS}
        week_day = day_of(now + WEEK_MS)
        # Per bucket, from the watermark's day to the day of now + 7 days (inclusive).
        first_day = max(day_of(watermark), day_of(now) - MAX_BEHIND_DAYS)
        for day in range(first_day, week_day + 1):
            for bucket_ms, n in self._counts.buckets_of_day(day):
                if bucket_ms >= watermark:
                    totals[horizon_of(max(0, bucket_ms - now))] += n
        # Per day beyond that: all of it is at least 7 days ahead.
        last_day = day_of(now + self._scheduling.max_future_ms)
        for period in range(period_of(week_day + 1), period_of(last_day) + 1):
            for day, n in self._counts.days_of_period(period):
                if day > week_day:
                    totals[">=7d"] += n
        return totals

    def clear(self) -> None:
        self._metrics.pending.clear()
        self._next_at = None

    def _forget_released_days(self, watermark: int) -> None:
        # Days wholly before the watermark's previous day: released, never read again.
        before = day_of(watermark) - 1
        start = self._forgotten_before
        if start is None:
            start = before - FORGET_LOOKBACK_DAYS
        for day in range(start, before):
            self._counts.forget_day(day)
        self._forgotten_before = max(start, before)
