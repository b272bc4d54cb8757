"""An app's delivery policy at the dispatcher: retry schedule, maximum event age, rate limit,
pause, concurrency and HTTP timeout (manual clock; sleeping moves it)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import httpx
import pytest

from scheduler.domain.policy import DeliveryPolicy
from scheduler.records import DeliveryOutcome, DueMessage
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.feeds import parked_uncounted_ms
from scheduler_releaser.dispatcher.rest import HEADER_MESSAGE_ID, Slots
from scheduler_releaser.dispatcher.timers import PARKED_HEADER, Position
from scheduler_releaser.settings import DispatchSettings

from .harness import CODECS, KAFKA_APP, REST_APP, TOPICS, Harness, build

pytestmark = pytest.mark.unit
MINUTE = 60_000
HOUR = 60 * MINUTE


def with_policy(app: Application, **fields: object) -> Application:
    return dataclasses.replace(app, policy=DeliveryPolicy(**fields))  # type: ignore[arg-type]


def ids(n: int) -> list[str]:
    return [f"01JAAAAAAAAAAAAAAAAAAA{i:04d}" for i in range(n)]


def due_now(h: Harness, app: Application, n: int) -> list[DueMessage]:
    messages = [h.message(app, due_in_ms=0, message_id=i) for i in ids(n)]
    for m in messages:
        h.dispatcher.accept(m, None)
    return messages


def outcomes(h: Harness) -> Counter[DeliveryOutcome]:
    return Counter(r.outcome for r in h.sink.results())


# -- retry schedule and maximum event age ---------------------------------------------------------


def test_the_apps_retry_policy_replaces_the_services() -> None:
    app = with_policy(REST_APP, max_attempts=2, min_backoff_ms=100, max_backoff_ms=100)
    h = build(lambda r: httpx.Response(503), apps=(app,))
    [m] = due_now(h, app, 1)
    asyncio.run(h.dispatcher.fire_due())
    [retry] = h.sink.retries()
    # the service's setting in this harness is 500 ms; the app's 100 (jitter +/- 20 %)
    assert 80 <= retry.due_ms - m.due_ms <= 120
    h.sink.emitted.clear()
    h.dispatcher.accept(retry, None)
    h.clock.advance(retry.due_ms - h.clock.now_ms())
    asyncio.run(h.dispatcher.fire_due())
    assert [r.outcome for r in h.sink.results()] == [DeliveryOutcome.FAILED]  # 2 attempts: done
    [dead] = h.sink.dead_letters()
    assert dead.attempts == 2


def test_a_message_older_than_the_max_event_age_fails_without_an_attempt() -> None:
    posted: list[httpx.Request] = []
    app = with_policy(REST_APP, max_event_age_ms=HOUR)
    h = build(lambda r: posted.append(r) or httpx.Response(200), apps=(app,))
    now = h.clock.now_ms()
    old = h.message(app, due_in_ms=-HOUR - 1, message_id=ids(2)[0], created_ms=now - 2 * HOUR)
    recent = h.message(
        app, due_in_ms=-HOUR + 1_000, message_id=ids(2)[1], created_ms=now - 2 * HOUR
    )
    for m in (old, recent):
        h.dispatcher.accept(m, None)
    asyncio.run(h.dispatcher.fire_due())
    assert [r.headers[HEADER_MESSAGE_ID] for r in posted] == [recent.message_id]
    by_id = {r.message_id: r for r in h.sink.results()}
    assert by_id[old.message_id].outcome is DeliveryOutcome.FAILED
    assert "maxEventAgeMs" in (by_id[old.message_id].error or "")
    assert by_id[recent.message_id].outcome is DeliveryOutcome.SENT
    [dead] = h.sink.dead_letters()
    assert dead.message_id == old.message_id
    assert (
        h.metric(
            "scheduler_dispatch_attempts_total",
            {"destination": "REST", "outcome": "failed", "reason": "max_event_age"},
        )
        == 1
    )


def test_no_retry_is_scheduled_past_the_max_event_age() -> None:
    app = with_policy(REST_APP, max_event_age_ms=1_500, min_backoff_ms=1_000, max_attempts=10)
    h = build(lambda r: httpx.Response(500), apps=(app,))
    [m] = due_now(h, app, 1)
    asyncio.run(h.dispatcher.fire_due())
    [retry] = h.sink.retries()  # ~1 s later: within 1.5 s of the first due instant
    h.sink.emitted.clear()
    h.dispatcher.accept(retry, None)
    h.clock.advance(retry.due_ms - h.clock.now_ms())
    asyncio.run(h.dispatcher.fire_due())
    # the next would be ~2 s after the retry: past the age, so this attempt was the last
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.FAILED and h.sink.retries() == []
    assert "no attempt left within the app's maxEventAgeMs" in (result.error or "")
    assert m.attempt == 1 and retry.attempt == 2


# -- rate limit -------------------------------------------------------------------------------


@pytest.mark.parametrize("app", [REST_APP, KAFKA_APP], ids=["REST", "KAFKA"])
def test_a_rate_limit_spreads_a_burst_of_due_messages_and_drops_none(app: Application) -> None:
    limited = with_policy(app, rate_per_second=10, rate_burst=1)
    h = build(lambda r: httpx.Response(200), apps=(limited,))
    start = h.clock.now_ms()
    due_now(h, limited, 50)
    asyncio.run(h.dispatcher.fire_due())
    assert outcomes(h) == {DeliveryOutcome.SENT: 50}
    times = sorted(e.at_ms - start for e in h.sink.emitted if e.at_ms is not None)
    per_second = Counter(t // 1_000 for t in times)
    assert max(per_second.values()) <= 10 + 1  # the rate, and the burst of one
    assert 4_800 <= times[-1] <= 5_200  # 50 at 10/s: the last ~4.9 s after the first


def test_a_busy_event_loop_that_wakes_the_pump_late_does_not_lower_the_rate() -> None:
    limited = with_policy(KAFKA_APP, rate_per_second=50, rate_burst=1)
    h = build(
        lambda r: httpx.Response(200),
        apps=(limited,),
        sleep_wakes_after=lambda asked_ms: asked_ms + 7,  # every sleep 7 ms late
    )
    start = h.clock.now_ms()
    due_now(h, limited, 101)
    asyncio.run(h.dispatcher.fire_due())
    times = sorted(e.at_ms - start for e in h.sink.emitted if e.at_ms is not None)
    assert len(times) == 101
    # 100 intervals of 20 ms: 2 s (within 10 %), not 100 x 27 ms as when each wake loses its lag
    assert 1_900 <= times[-1] <= 2_200, times[-1]
    per_100ms = Counter(t // 100 for t in times)
    assert max(per_100ms.values()) <= 5 + 5  # 100 ms at 50/s, plus the catch-up allowance


def test_each_of_n_dispatcher_instances_takes_its_share_of_the_rate() -> None:
    limited = with_policy(REST_APP, rate_per_second=10, rate_burst=2)
    h = build(
        lambda r: httpx.Response(200),
        apps=(limited,),
        settings=DispatchSettings(prefetch_ms=0, instances=2, instance=0),
    )
    start = h.clock.now_ms()
    due_now(h, limited, 20)
    asyncio.run(h.dispatcher.fire_due())
    times = sorted(e.at_ms - start for e in h.sink.emitted if e.at_ms is not None)
    assert len(times) == 20
    assert 3_600 <= times[-1] <= 4_000  # 5/s here: 1 at once (burst 2 / 2), 19 more at 5/s


def test_time_held_by_the_rate_limit_counts_toward_the_age_only_if_the_app_says_so() -> None:
    for counts, expected in ((False, {DeliveryOutcome.SENT: 5}), (True, None)):
        app = with_policy(
            REST_APP,
            rate_per_second=1,
            rate_burst=1,
            max_event_age_ms=2_500,
            rate_hold_counts_toward_age=counts,
        )
        h = build(lambda r: httpx.Response(200), apps=(app,))
        due_now(h, app, 5)
        asyncio.run(h.dispatcher.fire_due())
        found = outcomes(h)
        if expected is not None:
            assert found == expected
        else:  # released at 0, 1, 2, 3, 4 s: the last two are past 2.5 s
            assert found == {DeliveryOutcome.SENT: 3, DeliveryOutcome.FAILED: 2}


# -- pause ------------------------------------------------------------------------------------


def _resume_at(h: Harness, app: Application, at_ms: int) -> None:
    def on_sleep() -> None:
        if h.clock.now_ms() >= at_ms:
            h.apps.apps[app.app_id] = dataclasses.replace(app, deliveries_paused=False)

    h.dispatcher._sleep.on_sleep = on_sleep  # type: ignore[attr-defined]


def test_a_paused_apps_due_messages_wait_and_are_delivered_after_the_resume() -> None:
    posted: list[int] = []
    paused = dataclasses.replace(REST_APP, deliveries_paused=True)
    other = dataclasses.replace(KAFKA_APP)
    h = build(
        lambda r: posted.append(h.clock.now_ms()) or httpx.Response(200), apps=(paused, other)
    )
    start = h.clock.now_ms()
    _resume_at(h, paused, start + 10 * MINUTE)
    due_now(h, paused, 3)
    [kafka] = [h.message(other, due_in_ms=0, message_id="01JBBBBBBBBBBBBBBBBBBBBBBB")]
    h.dispatcher.accept(kafka, None)
    asyncio.run(h.dispatcher.fire_due())
    # the other app was not held; the paused one waited ten minutes and is SENT, not FAILED
    assert len(posted) == 3 and min(posted) >= start + 10 * MINUTE
    assert outcomes(h) == {DeliveryOutcome.SENT: 4}
    kafka_emit = next(e for e in h.sink.emitted if any(r.destination for r in e.records))
    assert kafka_emit.at_ms is not None and kafka_emit.at_ms < start + 1_000


def test_how_long_the_oldest_held_message_has_waited_is_reported_until_the_resume() -> None:
    """Operators see the wait grow (an alert fires at 3 days, for a pause forgotten) and fall
    back to 0 on the resume."""
    paused = dataclasses.replace(REST_APP, deliveries_paused=True)
    h = build(lambda r: httpx.Response(200), apps=(paused,))
    start = h.clock.now_ms()
    seen: list[float] = []

    def on_sleep() -> None:
        seen.append(h.metric("scheduler_dispatch_admission_oldest_wait_seconds"))
        if h.clock.now_ms() >= start + 10 * MINUTE:
            h.apps.apps[paused.app_id] = dataclasses.replace(paused, deliveries_paused=False)

    h.dispatcher._sleep.on_sleep = on_sleep  # type: ignore[attr-defined]
    due_now(h, paused, 2)
    asyncio.run(h.dispatcher.fire_due())
    assert outcomes(h) == {DeliveryOutcome.SENT: 2}
    assert 9 * 60 <= max(seen) <= 10 * 60 + 1
    assert h.metric("scheduler_dispatch_admission_oldest_wait_seconds") == 0


def test_a_pause_does_not_count_toward_the_max_event_age() -> None:
    paused = dataclasses.replace(
        with_policy(REST_APP, max_event_age_ms=5 * MINUTE), deliveries_paused=True
    )
    h = build(lambda r: httpx.Response(200), apps=(paused,))
    _resume_at(h, paused, h.clock.now_ms() + 10 * MINUTE)
    due_now(h, paused, 1)
    asyncio.run(h.dispatcher.fire_due())
    assert outcomes(h) == {DeliveryOutcome.SENT: 1}


def test_a_message_held_past_the_park_bound_goes_back_into_the_ring_and_commits_its_offset() -> (
    None
):
    """A held record would keep its partition's commit point for the whole pause (a restart
    reads everything after it again; past the ring's retention its record is gone). After
    park_after_ms its copy goes into the ring in the transaction that commits its offset, waits
    again when read, and is delivered after the resume, not expired: the pause before its
    park does not count toward the max event age either."""
    paused = dataclasses.replace(
        with_policy(REST_APP, max_event_age_ms=30 * MINUTE), deliveries_paused=True
    )
    settings = DispatchSettings(
        max_attempts=3, backoff_base_ms=500, prefetch_ms=0, park_after_ms=HOUR
    )
    posted: list[int] = []
    h = build(
        lambda r: posted.append(h.clock.now_ms()) or httpx.Response(200),
        apps=(paused,),
        settings=settings,
    )
    start = h.clock.now_ms()
    _resume_at(h, paused, start + 90 * MINUTE)
    m = h.message(paused, due_in_ms=0, message_id=ids(1)[0])
    original = Position("scheduler.due.00", 0, 7)
    h.dispatcher.accept(m, original)
    asyncio.run(h.dispatcher.fire_due())

    [parked] = h.sink.emitted
    assert parked.settled == original and posted == [] and h.sink.results() == []
    assert parked.at_ms is not None and start + HOUR <= parked.at_ms < start + HOUR + 1_000
    [copy] = parked.records
    assert copy.topic == TOPICS.ring.topic_for_send(m.due_ms, parked.at_ms)
    assert CODECS.due.decode(copy.value) == m and copy.key == m.message_id.encode()
    [(name, value)] = copy.headers
    assert name == PARKED_HEADER and HOUR <= int(value) < HOUR + 1_000
    assert h.metric("scheduler_dispatch_parked_total") == 1

    # read back from the ring: held again; a replayed copy of the original is still refused,
    # and so is the parked copy read a second time (a rebalance before its offset committed)
    uncounted = parked_uncounted_ms(list(copy.headers))
    h.dispatcher.accept(m, Position(copy.topic, 0, 8), uncounted)
    h.dispatcher.accept(m, original)
    h.dispatcher.accept(m, Position(copy.topic, 0, 8), uncounted)
    asyncio.run(h.dispatcher.fire_due())
    assert len(posted) == 1 and posted[0] >= start + 90 * MINUTE
    assert outcomes(h) == {DeliveryOutcome.SENT: 1}  # 90 min after its due: past the 30 min age
    replayed, read_twice, sent = h.sink.emitted[1:]
    assert (replayed.records, replayed.settled) == ([], original)
    assert (read_twice.records, read_twice.settled) == ([], Position(copy.topic, 0, 8))
    assert sent.settled == Position(copy.topic, 0, 8)


def test_every_held_message_of_a_paused_kafka_app_parks_after_the_bound_not_one_after_another() -> (
    None
):
    """A KAFKA app's messages fire in one task per batch; held one after the other, the n-th
    would only start to wait (and park) after n - 1 bounds, keeping its offset that long."""
    paused = dataclasses.replace(KAFKA_APP, deliveries_paused=True)
    settings = DispatchSettings(
        max_attempts=3, backoff_base_ms=500, prefetch_ms=0, park_after_ms=HOUR
    )
    h = build(apps=(paused,), settings=settings)
    start = h.clock.now_ms()
    _resume_at(h, paused, start + 90 * MINUTE)
    due_now(h, paused, 3)
    asyncio.run(h.dispatcher.fire_due())
    parks = [e for e in h.sink.emitted if any(r.headers for r in e.records)]
    assert len(parks) == 3
    assert all(e.at_ms is not None and e.at_ms < start + HOUR + 1_000 for e in parks)


def test_a_park_bound_beyond_half_the_rings_retention_is_refused_at_start() -> None:
    settings = DispatchSettings(park_after_ms=4 * 24 * HOUR)  # the retention is 7 days
    with pytest.raises(ValueError, match="PARK_AFTER_MS must be at most half"):
        build(settings=settings)


def test_an_abort_that_arrives_while_the_app_is_paused_wins() -> None:
    posted: list[httpx.Request] = []
    paused = dataclasses.replace(REST_APP, deliveries_paused=True)
    h = build(lambda r: posted.append(r) or httpx.Response(200), apps=(paused,))
    [m] = due_now(h, paused, 1)
    resume_at = h.clock.now_ms() + 60_000

    def on_sleep() -> None:
        if h.clock.now_ms() >= 30_000 + resume_at - 60_000 and not h.commands._read:
            h.abort_now(m)  # while it waits
        if h.clock.now_ms() >= resume_at:
            h.apps.apps[paused.app_id] = dataclasses.replace(paused, deliveries_paused=False)

    h.dispatcher._sleep.on_sleep = on_sleep  # type: ignore[attr-defined]
    asyncio.run(h.dispatcher.fire_due())
    assert posted == []
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.SKIPPED and result.error == "aborted"


def test_a_shutdown_while_paused_leaves_the_attempt_unsettled() -> None:
    paused = dataclasses.replace(REST_APP, deliveries_paused=True)
    h = build(lambda r: httpx.Response(200), apps=(paused,))
    stop_at = h.clock.now_ms() + 10_000

    def on_sleep() -> None:
        if h.clock.now_ms() >= stop_at:
            h.dispatcher.stopping = True

    h.dispatcher._sleep.on_sleep = on_sleep  # type: ignore[attr-defined]
    due_now(h, paused, 2)
    asyncio.run(h.dispatcher.fire_due())
    assert h.sink.emitted == []  # read again after the restart
    assert h.dispatcher.admission.waiting == 0


# -- concurrency and timeout ------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "expected"), [(None, 4), (1, 1), (2, 2)])
def test_max_concurrent_bounds_the_apps_requests_in_flight(
    limit: int | None, expected: int
) -> None:
    in_flight = 0
    most = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200)

    app = with_policy(REST_APP, max_concurrent=limit)
    h = build(handler, apps=(app,))  # type: ignore[arg-type]  # an async handler
    due_now(h, app, 10)
    asyncio.run(h.dispatcher.fire_due())
    assert most == expected  # the harness's service setting is 4
    assert outcomes(h) == {DeliveryOutcome.SENT: 10}


def test_the_apps_http_timeout_is_the_requests() -> None:
    timeouts: list[dict[str, float]] = []
    app = with_policy(REST_APP, http_timeout_ms=750)
    h = build(
        lambda r: timeouts.append(r.extensions["timeout"]) or httpx.Response(200), apps=(app,)
    )
    due_now(h, app, 1)
    asyncio.run(h.dispatcher.fire_due())
    assert timeouts == [{"connect": 0.75, "read": 0.75, "write": 0.75, "pool": 0.75}]


def test_slots_resized_while_held_let_in_no_more_than_the_new_capacity() -> None:
    async def scenario() -> list[int]:
        slots = Slots(3)
        seen: list[int] = []
        release = asyncio.Event()

        async def hold() -> None:
            async with slots:
                seen.append(slots.held)
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(5)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert slots.held == 3
        slots.resize(1)
        release.set()
        await asyncio.gather(*tasks)
        return seen

    seen = asyncio.run(scenario())
    assert seen[:3] == [1, 2, 3] and seen[3:] == [1, 1]  # after the resize: one at a time
