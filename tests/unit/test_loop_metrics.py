"""The single-writer metrics (scheduler.loop_metrics) expose what prometheus_client's Counter and
Histogram expose for the same writes (their `_created` series aside), and a scrape during writes
never sees its buckets and count disagree or go back."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from scheduler.loop_metrics import LoopCounter, LoopHistogram

pytestmark = pytest.mark.unit

BUCKETS = (0.001, 0.0025, 0.01, 0.1, 1.0, 5.0, 60.0)
LABEL_VALUES = st.sampled_from(["KAFKA", "REST", 'odd "quoted" \\ value\n'])
AMOUNTS = st.one_of(
    st.sampled_from([0.0, *BUCKETS, 60.000001, -1.0, math.inf]),
    st.floats(min_value=-10, max_value=1e6, allow_nan=False),
)


def exposition(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


@given(st.lists(st.tuples(LABEL_VALUES, AMOUNTS, st.integers(0, 3)), max_size=60))
def test_the_exposition_is_prometheus_client_s_for_the_same_writes(
    writes: list[tuple[str, float, int]],
) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    their_histogram = Histogram("h_seconds", "help of h", ["d"], buckets=BUCKETS, registry=theirs)
    our_histogram = LoopHistogram("h_seconds", "help of h", ["d"], buckets=BUCKETS, registry=ours)
    their_counter = Counter("c", "help of c", ["d", "o"], registry=theirs)
    our_counter = LoopCounter("c", "help of c", ["d", "o"], registry=ours)
    their_plain = Histogram("p", "unlabelled", buckets=BUCKETS, registry=theirs)
    our_plain = LoopHistogram("p", "unlabelled", buckets=BUCKETS, registry=ours)
    their_total = Counter("t_total", "unlabelled", registry=theirs)
    our_total = LoopCounter("t_total", "unlabelled", registry=ours)
    for label, amount, n in writes:
        their_histogram.labels(label).observe(amount)
        our_histogram.labels(label).observe(amount)
        their_plain.observe(amount)
        our_plain.observe(amount)
        their_counter.labels(label, str(n)).inc(n)
        our_counter.labels(label, str(n)).inc(n)
        their_total.inc(n)
        our_total.inc(n)
    assert exposition(ours) == exposition(theirs)
    sample = ours.get_sample_value("c_total", {"d": "KAFKA", "o": "2"})
    assert sample == theirs.get_sample_value("c_total", {"d": "KAFKA", "o": "2"})


def test_wrong_writes_are_refused_as_prometheus_client_refuses_them() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("c", "c", ["d"], registry=registry)
    histogram = LoopHistogram("h", "h", buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError):
        counter.labels("x", "y")
    with pytest.raises(ValueError):
        histogram.observe(math.nan)
    with pytest.raises(ValueError):  # the same name twice in one registry
        LoopHistogram("h", "h", buckets=BUCKETS, registry=registry)
    assert registry.get_sample_value("h_count") == 0


def test_scrapes_during_writes_see_consistent_growing_buckets() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("h", "h", ["d"], buckets=BUCKETS, registry=registry)
    counter = LoopCounter("c", "c", registry=registry)
    writes = 200_000
    amounts = [BUCKETS[i % len(BUCKETS)] * 0.9 for i in range(writes)]
    done = threading.Event()

    def write() -> None:
        child = histogram.labels("KAFKA")
        for amount in amounts:
            child.observe(amount)
            counter.inc()
        done.set()

    writer = threading.Thread(target=write)
    scrapes, previous = 0, [0.0] * (len(BUCKETS) + 1)
    writer.start()
    while not done.is_set() or scrapes == 0:
        [family] = histogram.collect()
        buckets = [s.value for s in family.samples if s.name == "h_bucket"]
        count = [s.value for s in family.samples if s.name == "h_count"]
        if buckets:
            assert buckets == sorted(buckets)  # cumulative
            assert count == [buckets[-1]]  # the count is the +Inf bucket of the same copy
            assert all(now >= before for now, before in zip(buckets, previous, strict=True))
            previous = buckets
        scrapes += 1
    writer.join()
    assert registry.get_sample_value("h_count", {"d": "KAFKA"}) == writes
    assert registry.get_sample_value("c_total") == writes
    assert registry.get_sample_value("h_sum", {"d": "KAFKA"}) == pytest.approx(sum(amounts))
