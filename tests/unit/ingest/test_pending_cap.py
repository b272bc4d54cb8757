"""The per-app cap on pending messages: the routes (fakes, ManualClock) and PendingCap itself."""

from __future__ import annotations

import asyncio

import pytest
from httpx import Response

from scheduler.clock import ManualClock
from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler.store.usage import InMemoryUsageStore, UsageKind, usage_day
from scheduler_ingest.errors import ApiError
from scheduler_ingest.io import BlockingIo
from scheduler_ingest.pending import PENDING_LIMIT_EXCEEDED, PendingCap
from scheduler_ingest.publisher import PublishError
from scheduler_ingest.settings import IngestSettings
from scheduler_ingest.usage import UsageCounter

from .harness import T0, Harness

pytestmark = pytest.mark.unit

BODY = {"payload": 1, "sendAt": "2026-01-01T00:05:00Z"}
REFRESH_MS = 2_000


def capped(limit: int, **kw: object) -> Harness:
    return Harness(
        settings=IngestSettings(
            max_pending_per_app=limit,
            pending_refresh_ms=REFRESH_MS,
            usage_flush_ms=kw.pop("usage_flush_ms", 0),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
    )


def rejects(h: Harness, reason: str) -> float:
    value = h.registry.get_sample_value("scheduler_ingest_rejects_total", {"reason": reason})
    return value or 0.0


def assert_refused(h: Harness, r: Response) -> None:
    assert (r.status_code, r.json()["error"]) == (429, PENDING_LIMIT_EXCEEDED)
    assert r.headers["Retry-After"] == "2"
    assert set(r.json()) == {"error", "message"}


def test_under_the_cap_accepted_at_the_cap_refused_and_nothing_stored() -> None:
    h = capped(3)
    try:
        ids = [h.schedule(BODY).json()["scheduledMessageId"] for _ in range(3)]
        assert h.usage.pending(h.alice.app_id) == 3
        assert_refused(h, h.schedule(BODY))
        assert len(h.published_requests()) == 3
        page = h.messages.list(h.alice.app_id, None, None, 50)
        assert sorted(v.content.message_id for v in page.items) == sorted(ids)
        assert h.usage.pending(h.alice.app_id) == 3
        assert rejects(h, PENDING_LIMIT_EXCEEDED) == 1
        assert h.schedule(BODY, h.bob).status_code == 200  # per app
    finally:
        h.close()


def test_a_batch_that_would_exceed_the_cap_is_refused_whole() -> None:
    h = capped(3)
    try:
        assert h.schedule(BODY).status_code == 200
        batch = {"messages": [BODY, BODY, BODY]}
        assert_refused(h, h.client.post("/messages/batch", json=batch, headers=h.alice.data))
        assert len(h.published_requests()) == 1
        assert h.usage.pending(h.alice.app_id) == 1
        # Invalid items take no room: two valid ones fit.
        batch = {"messages": [BODY, {"payload": 1}, BODY]}
        r = h.client.post("/messages/batch", json=batch, headers=h.alice.data)
        assert (r.status_code, r.json()["accepted"], r.json()["rejected"]) == (200, 2, 1)
        assert h.usage.pending(h.alice.app_id) == 3
        assert_refused(h, h.client.post("/messages/batch", json=batch, headers=h.alice.data))
    finally:
        h.close()


def test_an_abort_here_frees_room_at_once_and_a_redrive_takes_it_back() -> None:
    h = capped(2)
    try:
        first = h.schedule(BODY).json()["scheduledMessageId"]
        assert h.schedule(BODY).status_code == 200
        assert_refused(h, h.schedule(BODY))
        r = h.client.put(f"/messages/{first}/abort", headers=h.alice.data)
        assert r.status_code == 200
        assert h.usage.pending(h.alice.app_id) == 1
        assert h.schedule(BODY).status_code == 200  # no refresh needed: seen by this replica
        assert_refused(h, h.schedule(BODY))

        # A FAILED message redriven is pending again.
        h.clock.advance(REFRESH_MS)
        view = h.messages.get(h.alice.app_id, first)
        assert view is not None
        h.messages.update_status(
            h.alice.app_id,
            first,
            StatusUpdate(Status.FAILED, 1, 1, view.state.due_ms, T0),
            LogEntry(T0, "1:1:failed", Status.FAILED),
        )
        h.usage.add(h.alice.app_id, usage_day(T0), UsageKind.FAILED)  # the record writer's count
        h.clock.advance(REFRESH_MS)
        assert h.usage.pending(h.alice.app_id) == 1
        assert h.client.put(f"/messages/{first}/redrive", headers=h.alice.data).status_code == 200
        assert h.usage.pending(h.alice.app_id) == 2
        assert_refused(h, h.schedule(BODY))
    finally:
        h.close()


def test_deliveries_recorded_elsewhere_are_seen_after_the_refresh_interval() -> None:
    h = capped(2)
    try:
        assert [h.schedule(BODY).status_code for _ in range(2)] == [200, 200]
        assert_refused(h, h.schedule(BODY))
        # The dispatcher's record writer counts a delivery (SENT: one less pending).
        h.usage.add(h.alice.app_id, usage_day(T0), UsageKind.SENT)
        h.clock.advance(REFRESH_MS - 1)
        assert_refused(h, h.schedule(BODY))  # the cached reading is still in use
        h.clock.advance(1)
        assert h.schedule(BODY).status_code == 200
        assert_refused(h, h.schedule(BODY))
    finally:
        h.close()


def test_another_replicas_intake_is_seen_after_the_refresh_interval() -> None:
    h = capped(3)
    try:
        assert h.schedule(BODY).status_code == 200
        h.usage.add(h.alice.app_id, usage_day(T0), UsageKind.INGESTED, 2)  # another replica
        assert h.schedule(BODY).status_code == 200  # cached: 1 here + 1 = 2 < 3
        h.clock.advance(REFRESH_MS)
        assert_refused(h, h.schedule(BODY))  # read again: 4 pending
    finally:
        h.close()


def test_buffered_usage_counts_are_part_of_the_figure_before_they_are_written() -> None:
    h = capped(2, usage_flush_ms=3_600_000)  # never flushed during the test
    try:
        assert [h.schedule(BODY).status_code for _ in range(2)] == [200, 200]
        assert h.usage.pending(h.alice.app_id) == 0  # not written yet
        assert_refused(h, h.schedule(BODY))
        h.clock.advance(REFRESH_MS)
        assert_refused(h, h.schedule(BODY))  # a new read does not forget them
    finally:
        h.close()


def test_idempotent_repeats_are_not_counted_twice() -> None:
    h = capped(2)
    try:
        keyed = {**BODY, "idempotencyKey": "order-1"}
        assert h.schedule(keyed).status_code == 200
        r = h.schedule(keyed)
        assert (r.status_code, r.json()["duplicate"]) == (200, True)
        assert h.usage.pending(h.alice.app_id) == 1
        assert h.schedule(BODY).status_code == 200
    finally:
        h.close()


def test_a_retry_of_an_accepted_keyed_request_at_the_cap_gets_its_message() -> None:
    h = capped(1)
    try:
        keyed = {**BODY, "idempotencyKey": "order-1"}
        first = h.schedule(keyed).json()["scheduledMessageId"]
        r = h.schedule(keyed)
        assert (r.status_code, r.json()["scheduledMessageId"], r.json()["duplicate"]) == (
            200,
            first,
            True,
        )
        assert_refused(h, h.schedule({**BODY, "idempotencyKey": "order-2"}))
        assert len(h.published_requests()) == 1
    finally:
        h.close()


def test_a_failed_publish_takes_no_room() -> None:
    h = capped(1)
    try:
        h.fake.fail_with = PublishError("kafka_error", "broker down")
        assert h.schedule(BODY).status_code == 503
        assert h.usage.pending(h.alice.app_id) == 0
        h.fake.fail_with = None
        assert h.schedule(BODY).status_code == 200
    finally:
        h.close()


def test_zero_means_no_cap() -> None:
    h = capped(0)
    try:
        assert all(h.schedule(BODY).status_code == 200 for _ in range(5))
        assert h.usage.pending(h.alice.app_id) == 5
    finally:
        h.close()


# -- PendingCap alone ---------------------------------------------------------------------------


class FakeReads:
    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self, app_id: str) -> int:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("cassandra unreachable")
        return self.values.get(app_id, 0)


def cap(reads: FakeReads, clock: ManualClock, limit: int = 5, unflushed: int = 0) -> PendingCap:
    return PendingCap(
        read=reads, unflushed=lambda _: unflushed, clock=clock, limit=limit, refresh_ms=1_000
    )


def test_the_store_is_read_once_per_interval_and_concurrent_checks_share_one_read() -> None:
    async def scenario() -> None:
        reads, clock = FakeReads({"a": 2}), ManualClock()
        c = cap(reads, clock)
        reads.gate = asyncio.Event()
        takers = [asyncio.create_task(c.take("a")) for _ in range(3)]
        await reads.entered.wait()
        await asyncio.sleep(0)  # the other two reach the shared read
        reads.gate.set()
        await asyncio.gather(*takers)
        assert reads.calls == 1
        assert c.pending("a") == 5  # 2 stored + 3 reserved
        with pytest.raises(ApiError) as refused:
            await c.take("a")
        assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
        for _ in range(3):
            c.release("a")
        assert c.pending("a") == 2
        clock.advance(999)
        await c.take("a")
        assert reads.calls == 1
        clock.advance(1)
        reads.values["a"] = 0
        c.release("a")
        await c.take("a", 5)
        assert reads.calls == 2

    asyncio.run(scenario())


def test_a_failed_read_keeps_the_last_figure_and_is_retried_after_the_interval() -> None:
    async def scenario() -> None:
        reads, clock = FakeReads({"a": 5}), ManualClock()
        c = cap(reads, clock)
        with pytest.raises(ApiError):
            await c.take("a")
        reads.fail = True
        clock.advance(1_000)
        with pytest.raises(ApiError):  # still 5: the old figure
            await c.take("a")
        assert reads.calls == 2
        with pytest.raises(ApiError):
            await c.take("a")
        assert reads.calls == 2  # not read again before the interval
        broken = FakeReads({})
        broken.fail = True
        await cap(broken, clock).take("b")  # never read successfully: fails open

    asyncio.run(scenario())


def test_an_adjustment_made_during_a_read_is_kept() -> None:
    async def scenario() -> None:
        reads, clock = FakeReads({"a": 4}), ManualClock()
        c = cap(reads, clock)
        await c.take("a")
        c.release("a")
        c.adjust("a", -1)  # an abort, written before the next read: in its figure
        assert c.pending("a") == 3
        clock.advance(1_000)
        reads.values["a"] = 3
        reads.gate = asyncio.Event()
        reads.entered.clear()
        taker = asyncio.create_task(c.take("a"))
        await reads.entered.wait()
        c.adjust("a", -1)  # another abort while the read is under way: maybe not in it
        reads.gate.set()
        await taker
        assert c.pending("a") == 3  # 3 read - 1 kept + 1 reserved

    asyncio.run(scenario())


def test_negative_drift_does_not_grant_extra_room_and_unflushed_counts() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        c = cap(FakeReads({"a": -10}), clock, limit=2, unflushed=1)
        await c.take("a")
        with pytest.raises(ApiError):
            await c.take("a")
        assert c.pending("a") == 2

    asyncio.run(scenario())


def test_no_limit_reads_nothing() -> None:
    async def scenario() -> None:
        reads = FakeReads({"a": 10**9})
        c = PendingCap(
            read=reads, unflushed=lambda _: 0, clock=ManualClock(), limit=None, refresh_ms=0
        )
        await c.take("a", 10**6)
        c.release("a", 10**6)
        assert reads.calls == 0

    asyncio.run(scenario())


# -- UsageCounter: what is not in the store yet ------------------------------------------------


class FlakyUsage(InMemoryUsageStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        if self.down:
            raise ConnectionError("cassandra unreachable")
        super().add(app_id, day, kind, n)


def test_unflushed_counts_last_until_written_and_each_write_is_reported() -> None:
    async def scenario() -> None:
        written: list[tuple[str, int]] = []
        store = FlakyUsage()
        counter = UsageCounter(
            store, BlockingIo(1), 60_000, on_written=lambda a, n: written.append((a, n))
        )
        await counter.count("a", 1, 2)
        await counter.count("a", 2, 1)
        assert counter.unflushed("a") == 3 and counter.unflushed("b") == 0
        counter.flush()  # fails: kept for the next flush, still unflushed
        assert (counter.unflushed("a"), written) == (3, [])
        store.down = False
        counter.flush()
        assert counter.unflushed("a") == 0
        assert sorted(written) == [("a", 1), ("a", 2)]
        assert store.pending("a") == 3

    asyncio.run(scenario())
