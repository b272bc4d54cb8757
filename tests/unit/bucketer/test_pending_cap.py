"""The pending cap for Kafka-native requests: counted when durable, refused over the cap."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import pytest

from scheduler.store.usage import InMemoryUsageStore, UsageKind, usage_day
from scheduler_bucketer.pipeline import Ports, build_processor
from scheduler_bucketer.settings import BucketerSettings

from .harness import SCHEDULING, Harness

pytestmark = pytest.mark.unit

REFRESH_MS = 1_000


def capped(limit: int) -> tuple[Harness, InMemoryUsageStore]:
    h = Harness()
    usage = InMemoryUsageStore()
    h.processor = build_processor(
        Ports(h.messages, h.buckets, h.apps, h.producer, h.clock, usage=usage),
        h.topics,
        SCHEDULING,
        BucketerSettings(
            watermark_cache_ms=0,
            app_cache_ms=0,
            max_pending_per_app=limit,
            pending_refresh_ms=REFRESH_MS,
        ),
        h.metrics,
        h.writer,
    )
    return h, usage


def test_kafka_native_requests_are_counted_and_refused_over_the_cap() -> None:
    h, usage = capped(2)
    later = h.clock.now_ms() + 60_000
    first, second, third = (h.request(later) for _ in range(3))
    h.process(h.record(first), h.record(second), h.record(third))
    assert {m.message_id for m in h.stored()} == {first.message_id, second.message_id}
    assert h.messages.get("app-a", third.message_id) is None
    [rejected] = h.rejected()
    assert (rejected.reason, rejected.app_id, rejected.message_id) == (
        "pending_limit_exceeded",
        "app-a",
        third.message_id,
    )
    assert h.metric("scheduler_bucketer_rejected_total", reason="pending_limit_exceeded") == 1
    assert usage.pending("app-a") == 2
    [day] = usage.read("app-a", 0, usage_day(later))
    assert day.ingested == 2


def test_requests_from_ingest_are_neither_checked_nor_counted_again() -> None:
    h, usage = capped(1)
    later = h.clock.now_ms() + 60_000
    from_ingest = [dataclasses.replace(h.request(later), source="http") for _ in range(3)]
    h.process(*(h.record(r) for r in from_ingest))
    assert len(h.stored()) == 3 and h.rejected() == []
    assert usage.pending("app-a") == 0  # ingest counted them


def test_a_replay_of_an_accepted_request_is_not_refused() -> None:
    h, usage = capped(1)
    request = h.request(h.clock.now_ms() + 60_000)
    h.process(h.record(request))
    h.clock.advance(REFRESH_MS)
    h.process(h.record(request))  # e.g. the batch retried after a crash before the commit
    assert h.rejected() == []
    assert [m.message_id for m in h.stored()] == [request.message_id]
    assert usage.pending("app-a") == 2  # counted again: the documented, approximate side


def test_room_freed_by_deliveries_is_seen_after_the_refresh_interval() -> None:
    h, usage = capped(1)
    later = h.clock.now_ms() + 60_000
    h.process(h.record(h.request(later)))
    usage.add("app-a", usage_day(later), UsageKind.SENT)  # the record writer, elsewhere
    h.process(h.record(h.request(later)))
    assert len(h.rejected()) == 1  # cached reading: still 1 pending
    h.clock.advance(REFRESH_MS)
    h.process(h.record(h.request(later)))
    assert len(h.rejected()) == 1
    assert len(h.stored()) == 2


def test_zero_means_no_cap_but_requests_are_still_counted() -> None:
    h, usage = capped(0)
    later = h.clock.now_ms() + 60_000
    h.process(*(h.record(h.request(later)) for _ in range(3)))
    assert h.rejected() == [] and len(h.stored()) == 3
    assert usage.pending("app-a") == 3


def test_a_flood_over_the_cap_costs_one_store_read_per_chunk_not_one_per_request() -> None:
    """A producer far over its cap must not slow the partitions it shares with other apps: the
    replay check of the refused requests is one concurrent read per chunk (before: a blocking
    read per request, about 1,000 refusals/s on two cores)."""
    h, usage = capped(2)
    reads: list[int] = []
    get, recorded = h.messages.get, h.messages.recorded

    def counting_get(app_id: str, message_id: str) -> object:
        reads.append(1)
        return get(app_id, message_id)

    def counting_recorded(keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        reads.append(len(keys))
        return recorded(keys)

    h.messages.get = counting_get  # type: ignore[method-assign,assignment]
    h.messages.recorded = counting_recorded  # type: ignore[method-assign]
    later = h.clock.now_ms() + 60_000
    requests = [h.request(later) for _ in range(102)]
    h.process(*(h.record(r) for r in requests))
    assert reads == [100]  # one call for the 100 over the cap
    assert len(h.stored()) == 2
    assert sorted(r.message_id for r in h.rejected()) == sorted(r.message_id for r in requests[2:])
    assert usage.pending("app-a") == 2


def test_replays_and_new_requests_over_the_cap_in_one_batch() -> None:
    """Over the cap, a replay of a stored message is admitted and a new one refused, whatever
    their order in the batch; a copy of a refused request in the same batch is refused too."""
    h, usage = capped(2)
    later = h.clock.now_ms() + 60_000
    stored = [h.request(later) for _ in range(2)]
    h.process(*(h.record(r) for r in stored))
    h.clock.advance(REFRESH_MS)
    fresh = [h.request(later) for _ in range(2)]
    batch = [fresh[0], stored[1], fresh[1], stored[0], fresh[0]]
    h.process(*(h.record(r) for r in batch))
    assert sorted(r.message_id for r in h.rejected()) == sorted(
        [fresh[0].message_id, fresh[1].message_id, fresh[0].message_id]
    )
    assert {m.message_id for m in h.stored()} == {r.message_id for r in stored}
    assert usage.pending("app-a") == 4  # the replays counted again: the documented side


def test_a_flood_of_refusals_logs_a_line_per_reason_and_batch_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each refusal is on the rejected topic with its detail; the log says how many and shows
    the first, so a producer far over its cap cannot flood the service's log (and its CPU)."""
    h, _ = capped(2)
    later = h.clock.now_ms() + 60_000
    requests = [h.request(later) for _ in range(102)]
    with caplog.at_level(logging.WARNING, logger="scheduler_bucketer"):
        h.process(*(h.record(r) for r in requests))
    assert len(h.rejected()) == 100
    [line] = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "100 request(s)" in line and "pending_limit_exceeded" in line
    assert f"{h.topics.requests}[0]@2" in line  # the first one refused
