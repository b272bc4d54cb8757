"""Per-application metrics with a bounded label set: the top N applications by recent volume get
their own `app` label value, every other application is counted under `app="other"`.

Why: an `app` label with one value per application would grow without bound (every app ever
seen, in every process). Here, per process and per metric, at most N app values exist at any
time (plus "other"), so the series count is bounded by N x (other labels) + 1:

- an application not yet ranked is admitted at once while fewer than N are;
- every `window_ms` the N apps with the most events in that window become the ranked set (the
  events of the window are counted per app for at most `4 N` apps, the space-saving way: a new
  app replaces the smallest count, so a heavy app is never missed);
- an app that drops out of the set has its series removed, so its counter restarts from 0 if
  it comes back (Prometheus' rate() ignores a series' first sample, never a spike).

Across replicas each process ranks its own traffic; a dashboard's `topk(N, sum by (app) ...)`
merges them. The `other` series is the exact remainder (sum over apps is exact).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.clock import Clock, SystemClock

OTHER = "other"


class TopAppsSettings(BaseSettings):
    """``SCHEDULER_METRICS_*``: the bound of per-application labels (ingest and dispatcher)."""

    model_config = SettingsConfigDict(env_prefix="SCHEDULER_METRICS_", frozen=True, extra="ignore")

    top_apps: int = Field(
        default=20, ge=0, le=1_000, description="apps with their own `app` label (0: all other)"
    )
    top_apps_window_ms: int = Field(
        default=300_000, ge=1_000, description="the ranking is redone over this window"
    )


class TopApps:
    """Decides the `app` label value of an event: the app id while the app is ranked, else
    OTHER; `label()` also returns the apps that left the ranked set (their series go)."""

    def __init__(self, clock: Clock, size: int, window_ms: int) -> None:
        self._clock = clock
        self._size = size
        self._window_ms = window_ms
        self._capacity = 4 * size
        self._ranked: set[str] = set()
        self._window: dict[str, int] = {}
        self._window_end = clock.monotonic_ms() + window_ms
        self._lock = threading.Lock()

    @property
    def ranked(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ranked)

    def label(self, app_id: str, n: int = 1) -> tuple[str, list[str]]:
        """The label value for `n` events of the app, and the apps evicted meanwhile."""
        with self._lock:
            evicted = self._roll_window()
            self._count(app_id, n)
            if app_id not in self._ranked and len(self._ranked) < self._size:
                self._ranked.add(app_id)
            return (app_id if app_id in self._ranked else OTHER), evicted

    def _count(self, app_id: str, n: int) -> None:
        if app_id in self._window or len(self._window) < self._capacity:
            self._window[app_id] = self._window.get(app_id, 0) + n
        elif self._capacity:
            # Space-saving: the newcomer takes the smallest slot and inherits its count (an
            # over-estimate, never an under-estimate, of the newcomer's volume).
            smallest = min(self._window, key=lambda a: (self._window[a], a))
            self._window[app_id] = self._window.pop(smallest) + n

    def _roll_window(self) -> list[str]:
        now = self._clock.monotonic_ms()
        if now < self._window_end:
            return []
        self._window_end = now + self._window_ms
        order = sorted(self._window, key=lambda a: (-self._window[a], a))
        ranked = set(order[: self._size])
        evicted = sorted(self._ranked - ranked)
        self._ranked = ranked
        self._window = {}
        return evicted


class AppCounter:
    """A Counter whose first label is `app`, bounded by a TopApps of its own."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        top: TopApps,
    ) -> None:
        self.counter = Counter(name, documentation, ["app", *labelnames], registry=registry)
        self._top = top
        # app -> its label tuples -> the counter's child (labels() is slow under a hotspot)
        self._series: dict[str, dict[tuple[str, ...], Any]] = {}
        self._lock = threading.Lock()

    def inc(self, app_id: str, *labels: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:  # ranking and series change together: no evicted app's series revives
            app, evicted = self._top.label(app_id, n)
            for gone in evicted:
                for rest in self._series.pop(gone, {}):
                    self.counter.remove(gone, *rest)
            series = self._series.setdefault(app, {})
            child = series.get(labels)
            if child is None:
                child = series[labels] = self.counter.labels(app, *labels)
            child.inc(n)


def top_apps(settings: TopAppsSettings | None = None, clock: Clock | None = None) -> TopApps:
    """A TopApps from the environment's settings (the services' metrics use this default)."""
    s = settings or TopAppsSettings()
    return TopApps(clock or SystemClock(), s.top_apps, s.top_apps_window_ms)
