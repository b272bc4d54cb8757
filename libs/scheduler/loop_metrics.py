"""Counters and histograms written by one thread only, read by scrapes from any: no lock on the
write path.

Why: prometheus_client takes a lock for every increment (a histogram observation takes two, and
searches its buckets in a Python loop). The dispatcher's commit callback of a KAFKA message made
four such calls, 1-3 us each, for every message of a hotspot on its busiest thread (releaser
README, "The hotspot"). One writer needs no lock: a write replaces one list element or one
attribute, which is atomic under the GIL, and a scrape copies the bucket list in one step.

The exposition is prometheus_client's own for the same declaration (names, help, labels,
buckets, samples), without the `_created` series (no dashboard or alert reads them). A scrape may
see an observation in `_sum` and not yet in the buckets, or the other way round; `_count` is the
`+Inf` bucket of the same copy, so the buckets and the count always agree.

Use them only where every write happens on one thread (the dispatcher's event loop); anything
else keeps prometheus_client's metrics.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar, cast

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_go_float = cast(Callable[[float], str], floatToGoString)  # untyped in prometheus_client


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class _HistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        if math.isnan(amount):
            raise ValueError("a histogram cannot observe NaN")
        # the first bucket whose upper bound is >= amount: Prometheus' `le`
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1
        self.sum += amount


Child = TypeVar("Child", _CounterChild, _HistogramChild)


class _Labelled(Collector, Generic[Child]):
    """A metric family and its children, one per tuple of label values (an unlabelled family
    has its one child from the start, as prometheus_client's)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        if not self._labelnames:
            self.labels()
        registry.register(self)

    def labels(self, *values: str) -> Child:
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self._name}: expected labels {self._labelnames}, got {key}")
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self._new_child())
        return child

    def _new_child(self) -> Child:
        raise NotImplementedError

    def _snapshot(self) -> list[tuple[tuple[str, ...], Child]]:
        return list(self._children.items())  # one step under the GIL: a new child may come

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_Labelled[_CounterChild]):
    """prometheus_client's Counter for a single writer (the `_total` suffix is added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, child in self._snapshot():
            family.add_metric(list(values), child.value)
        return [family]


class LoopHistogram(_Labelled[_HistogramChild]):
    """prometheus_client's Histogram for a single writer."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        self._le = tuple(_go_float(b) for b in bounds)  # the `le` label values, as theirs
        super().__init__(name, documentation, labelnames, registry)

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, child in self._snapshot():
            counts = list(child.counts)  # one step: the buckets and the count agree
            cumulative, buckets = 0, []
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        return [family]
