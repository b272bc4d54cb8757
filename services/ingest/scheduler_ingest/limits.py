"""Per-data-key rate limit (token bucket) and optional per-app daily quota, per replica.

Both answer 429 with Retry-After. They are per ingest replica (ARCHITECTURE.md, "Rate limits and
quotas"): with N replicas behind a balancer the effective limits are up to N times these.
Time comes from the injected clock, so tests drive them with a ManualClock.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from scheduler.clock import Clock
from scheduler_ingest.errors import ApiError

DAY_MS = 86_400_000
_MAX_TRACKED = 100_000  # buckets kept at most (LRU); an evicted key starts again with a full bucket


class RateLimiter:
    def __init__(self, clock: Clock, rate_per_s: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate_per_s / 1000.0  # tokens per ms
        self._burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, n: int = 1) -> None:
        """Spend `n` tokens of `key`'s bucket or raise a 429 (spending nothing)."""
        now = self._clock.monotonic_ms()
        with self._lock:
            tokens, at = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if n > self._burst:
                raise ApiError(
                    429, "rate_limited", f"{n} messages exceed this key's burst of {self._burst:g}"
                )
            if tokens < n:
                wait_s = math.ceil((n - tokens) / self._rate / 1000.0)
                self._buckets[key] = (tokens, now)
                raise ApiError(
                    429,
                    "rate_limited",
                    "rate limit of this data key exceeded; retry later",
                    {"Retry-After": str(max(1, wait_s))},
                )
            self._buckets[key] = (tokens - n, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > _MAX_TRACKED:
                self._buckets.popitem(last=False)


class DailyQuota:
    """At most `limit` messages per app per UTC day on this replica (None: no quota)."""

    def __init__(self, clock: Clock, limit: int | None) -> None:
        self._clock = clock
        self._limit = limit
        self._counts: dict[str, tuple[int, int]] = {}  # app -> (day, count)
        self._lock = threading.Lock()

    def take(self, app_id: str, n: int = 1) -> None:
        if self._limit is None:
            return
        now = self._clock.now_ms()
        day = now // DAY_MS
        with self._lock:
            counted_day, count = self._counts.get(app_id, (day, 0))
            if counted_day != day:
                count = 0
            if count + n > self._limit:
                retry = math.ceil(((day + 1) * DAY_MS - now) / 1000)
                raise ApiError(
                    429,
                    "quota_exceeded",
                    f"daily quota of {self._limit} messages for this application reached",
                    {"Retry-After": str(max(1, retry))},
                )
            self._counts[app_id] = (day, count + n)

    def give_back(self, app_id: str, n: int) -> None:
        """Return what a failed publish did not use."""
        if self._limit is None:
            return
        with self._lock:
            day, count = self._counts.get(app_id, (0, 0))
            self._counts[app_id] = (day, max(0, count - n))
