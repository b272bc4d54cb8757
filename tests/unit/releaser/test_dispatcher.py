"""The dispatcher core with a ManualClock, in-memory stores and an httpx MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import pytest

from scheduler.domain.policy import DeliveryPolicy
from scheduler.domain.status import Status
from scheduler.encryption import UnreadableValue
from scheduler.records import DeliveryOutcome
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.refusals import Refusal
from scheduler_releaser.dispatcher.rest import HEADER_MESSAGE_ID
from scheduler_releaser.dispatcher.timers import PARKED_HEADER, Position
from scheduler_releaser.settings import DispatchSettings

from .harness import (
    CODECS,
    KAFKA_APP,
    REST_APP,
    SCHEDULING,
    TOPICS,
    Emitted,
    Harness,
    KnownTopics,
    ManualSleep,
    build,
)

pytestmark = pytest.mark.unit
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_fires_at_the_due_instant_never_early() -> None:
    seen: list[tuple[int, httpx.Request]] = []
    h = build(lambda request: seen.append((h.clock.now_ms(), request)) or httpx.Response(204))
    message = h.message(due_in_ms=1_000)

    async def scenario() -> None:
        h.dispatcher.accept(message, Position("t", 0, 7))
        # Started up to max(prefetch, KAFKA produce-ahead) = 5 ms early, delivered at the due
        # instant (the manual sleep moves the clock).
        h.clock.advance(994)
        assert await h.dispatcher.fire_due() == 0
        assert seen == []
        h.clock.advance(1)
        assert await h.dispatcher.fire_due() == 1

    run(scenario())
    assert [at for at, _ in seen] == [message.due_ms]
    request = seen[0][1]
    assert json.loads(request.content) == {"payload": {"hello": "world"}}
    assert request.headers[HEADER_MESSAGE_ID] == message.message_id
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.SENT
    assert result.lateness_ms == 0
    assert h.sink.emitted[-1].settled == Position("t", 0, 7)
    # REST is delivered by the POST itself: its transaction is not held for a due instant
    assert h.sink.emitted[-1].not_before_ms is None
    assert h.metric("scheduler_dispatch_lateness_seconds_count", {"destination": "REST"}) == 1


@pytest.mark.parametrize("app", [REST_APP, KAFKA_APP], ids=["REST", "KAFKA"])
def test_a_sleep_that_wakes_early_is_checked_again_never_delivering_early(
    app: Application,
) -> None:
    delivered: list[int] = []
    h = build(
        lambda request: delivered.append(h.clock.now_ms()) or httpx.Response(204),
        settings=DispatchSettings(prefetch_ms=400),
        sleep_wakes_after=lambda asked_ms: asked_ms // 2,  # every sleep wakes halfway
    )
    message = h.message(app, due_in_ms=1_000)
    h.dispatcher.accept(message, None)
    h.clock.advance(600)  # within the prefetch: the task starts and waits for the due instant
    run(h.dispatcher.fire_due())
    sleep = h.dispatcher._sleep
    assert isinstance(sleep, ManualSleep) and sleep.woke_early >= 2
    if app is REST_APP:
        assert delivered == [message.due_ms]
    else:  # produced ahead, into a transaction held until the due instant
        [emit] = h.sink.emitted
        assert any(r.destination for r in emit.records)
        assert emit.at_ms is not None
        assert emit.at_ms >= message.due_ms - DispatchSettings().kafka_produce_ahead_ms
        assert emit.not_before_ms == message.due_ms
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.SENT and result.lateness_ms is not None
    assert result.lateness_ms >= 0


def test_past_due_fires_at_once_in_due_order() -> None:
    order: list[str] = []
    h = build(lambda r: order.append(r.headers[HEADER_MESSAGE_ID]) or httpx.Response(200))
    late = h.message(due_in_ms=-5_000, message_id="01JAAAAAAAAAAAAAAAAAAAAAA1")
    later = h.message(due_in_ms=-1_000, message_id="01JAAAAAAAAAAAAAAAAAAAAAA2")
    future = h.message(due_in_ms=10, message_id="01JAAAAAAAAAAAAAAAAAAAAAA3")
    for m in (later, future, late):
        h.dispatcher.accept(m, None)
    assert run(h.dispatcher.fire_due()) == 2
    assert sorted(order) == [late.message_id, later.message_id]
    assert len(h.dispatcher.timers) == 1


def test_duplicate_attempt_is_settled_without_delivery_but_retry_and_redrive_pass() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    m = h.message(due_in_ms=0)
    h.dispatcher.accept(m, Position("t", 0, 1))
    h.dispatcher.accept(m, Position("t", 0, 2))  # a replayed copy
    h.dispatcher.accept(h.message(due_in_ms=0, attempt=2), Position("t", 0, 3))
    h.dispatcher.accept(h.message(due_in_ms=0, generation=1), Position("t", 0, 4))
    assert h.sink.emitted[0].settled == Position("t", 0, 2)
    assert h.sink.emitted[0].records == []
    run(h.dispatcher.fire_due())
    assert len(calls) == 3
    assert h.metric("scheduler_dispatch_duplicates_total") == 1


def test_abort_command_prevents_delivery() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    m = h.message(due_in_ms=500)
    h.dispatcher.accept(m, None)
    h.abort_now(m)
    h.clock.advance(500)
    run(h.dispatcher.fire_due())
    assert calls == []
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.SKIPPED and result.error == "aborted"


def test_aborted_record_prevents_delivery_and_other_generation_is_unaffected() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    m = h.message(due_in_ms=0)
    h.store_record(m, Status.ABORTED)
    h.dispatcher.accept(m, None)
    run(h.dispatcher.fire_due())
    assert calls == []
    assert h.metric("scheduler_dispatch_skipped_total", {"reason": "aborted"}) == 1


def test_record_already_sent_or_newer_generation_is_not_delivered_again() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    sent = h.message(due_in_ms=0, message_id="01JAAAAAAAAAAAAAAAAAAAAAA1")
    h.store_record(sent, Status.SENT)
    stale = h.message(due_in_ms=0, message_id="01JAAAAAAAAAAAAAAAAAAAAAA2")
    h.store_record(h.message(message_id=stale.message_id, generation=1), Status.QUEUED)
    h.dispatcher.accept(sent, None)
    h.dispatcher.accept(stale, None)
    run(h.dispatcher.fire_due())
    assert calls == []
    assert sorted(r.error or "" for r in h.sink.results()) == ["done", "stale"]


def test_deleted_app_aborts_instead_of_delivering() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    h.apps.apps[REST_APP.app_id] = replace(REST_APP, deleted_ms=1)
    h.dispatcher.accept(h.message(due_in_ms=0), None)
    run(h.dispatcher.fire_due())
    assert calls == []
    assert h.sink.results()[0].error == "app_deleted"


def test_commands_lagging_beyond_the_guard_holds_firing() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    h.dispatcher.accept(h.message(due_in_ms=0), None)
    h.commands.arrive()  # a record arrived: not at the end any more
    h.clock.advance(SCHEDULING.cancel_guard_ms + 1)
    assert run(h.dispatcher.fire_due()) == 0
    h.commands.read()
    assert run(h.dispatcher.fire_due()) == 1
    assert len(calls) == 1


def test_retryable_failures_reschedule_then_fail_with_a_dead_letter() -> None:
    h = build(lambda r: httpx.Response(503, text="busy, try later"))
    m = h.message(due_in_ms=0)
    h.dispatcher.accept(m, Position("t", 0, 1))
    run(h.dispatcher.fire_due())
    [retry] = h.sink.retries()
    assert (retry.attempt, retry.generation) == (2, 0)
    assert retry.due_ms > h.clock.now_ms()
    assert h.sink.on(TOPICS.ring.topic_for(retry.due_ms))
    assert h.sink.results()[0].outcome is DeliveryOutcome.RETRY
    # the retry comes back through the ring
    h.dispatcher.accept(retry, Position("t", 0, 2))
    h.clock.set(retry.due_ms)
    run(h.dispatcher.fire_due())
    retry3 = h.sink.retries()[-1]
    assert retry3.attempt == 3
    h.dispatcher.accept(retry3, Position("t", 0, 3))
    h.clock.set(retry3.due_ms)
    run(h.dispatcher.fire_due())
    outcomes = [r.outcome for r in h.sink.results()]
    assert outcomes == [DeliveryOutcome.RETRY, DeliveryOutcome.RETRY, DeliveryOutcome.FAILED]
    [dead] = h.sink.dead_letters()
    assert dead.attempts == 3 and dead.last_http_status == 503
    assert dead.body_excerpt == "busy, try later"
    assert "busy" in (h.sink.results()[-1].error or "")


def test_a_4xx_or_a_redirect_fails_at_once() -> None:
    for status in (400, 404, 302):
        h = build(lambda r, s=status: httpx.Response(s, headers={"Location": "http://x/"}))
        h.dispatcher.accept(h.message(due_in_ms=0), None)
        run(h.dispatcher.fire_due())
        assert [r.outcome for r in h.sink.results()] == [DeliveryOutcome.FAILED], status
        assert h.sink.retries() == []
        assert len(h.sink.dead_letters()) == 1


def test_retry_beyond_the_released_window_is_stored_in_its_bucket() -> None:
    h = build(
        lambda r: httpx.Response(500),
        settings=DispatchSettings(max_attempts=3, backoff_base_ms=60_000),
    )
    m = h.message(due_in_ms=0)
    h.dispatcher.accept(m, None)
    run(h.dispatcher.fire_due())
    assert h.sink.retries() == []
    stored = [
        msg
        for bucket in range(h.clock.now_ms(), h.clock.now_ms() + 200_000, 1_000)
        for app, shard in h.buckets.partitions(bucket)
        for msg in h.buckets.read(bucket, app, shard)
    ]
    assert [(s.message_id, s.attempt) for s in stored] == [(m.message_id, 2)]


def test_kafka_app_gets_a_destination_record_in_the_same_batch_as_its_result() -> None:
    h = build()
    m = h.message(KAFKA_APP, due_in_ms=0, kafka_key="k1")
    h.dispatcher.accept(m, Position("t", 0, 9))
    run(h.dispatcher.fire_due())
    [batch] = h.sink.emitted
    dest, result = batch.records
    assert (dest.topic, dest.key, dest.value) == ("dest.topic", b"k1", m.payload_json.encode())
    assert dict(dest.headers)[HEADER_MESSAGE_ID] == m.message_id.encode()
    assert result.topic == TOPICS.results
    assert batch.settled == Position("t", 0, 9)
    assert batch.on_committed is not None
    h.sink.commit(m.due_ms + 7)
    assert h.metric("scheduler_dispatch_lateness_seconds_sum", {"destination": "KAFKA"}) == 0.007


def test_kafka_app_naming_a_system_topic_fails_and_a_missing_topic_is_retried() -> None:
    expected = {"sched.requests": DeliveryOutcome.FAILED, "no.such.topic": DeliveryOutcome.RETRY}
    for endpoint, outcome in expected.items():
        h = build(apps=(replace(KAFKA_APP, endpoint=endpoint),))
        h.dispatcher.accept(h.message(KAFKA_APP, due_in_ms=0), None)
        run(h.dispatcher.fire_due())
        # A topic missing from metadata may be a moment's view (just created, broker
        # restarting): retried with backoff, FAILED only once the attempts are used up.
        assert [r.outcome for r in h.sink.results()] == [outcome]
        assert all(r.topic != endpoint for e in h.sink.emitted for r in e.records)


def _refuse(h: Harness, refusal: Refusal) -> Emitted:
    """Fire one KAFKA message, then play the sink: its destination refuses the record."""
    h.dispatcher.accept(h.message(KAFKA_APP, due_in_ms=0), Position("t", 0, 3))
    run(h.dispatcher.fire_due())
    [first] = h.sink.emitted
    assert first.on_refused is not None and first.records[0].destination
    h.sink.emitted.clear()

    async def refused() -> None:
        assert first.on_refused is not None
        first.on_refused(refusal)
        await h.dispatcher.drain()

    run(refused())
    [again] = h.sink.emitted
    return again


def test_a_permanently_refused_kafka_record_fails_its_attempt_with_the_brokers_reason() -> None:
    h = build()
    again = _refuse(h, Refusal("MSG_SIZE_TOO_LARGE", True, "Broker: Message size too large"))
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.FAILED
    assert result.error is not None and "MSG_SIZE_TOO_LARGE" in result.error
    [dead] = h.sink.dead_letters()
    assert "MSG_SIZE_TOO_LARGE" in dead.last_error
    # Settled with the same ring offset, and no destination record this time.
    assert again.settled == Position("t", 0, 3)
    assert not any(r.destination for r in again.records)
    assert (
        h.metric(
            "scheduler_dispatch_attempts_total",
            {"destination": "KAFKA", "outcome": "failed", "reason": "msg_size_too_large"},
        )
        == 1
    )
    assert h.metric(
        "scheduler_dispatch_attempts_total",
        {"destination": "KAFKA", "outcome": "sent", "reason": "produced"},
    ) in (None, 0)


QUARANTINE = DispatchSettings().destination_quarantine_ms
TIMEOUT = Refusal("DESTINATION_TIMEOUT", False, "no acknowledgement within 5000 ms")


def _produced(h: Harness) -> dict[str, int]:
    """Message id -> the instant its destination record was emitted."""
    return {
        r.headers[0][1].decode(): e.at_ms or 0
        for e in h.sink.emitted
        for r in e.records
        if r.destination
    }


def test_a_transiently_refused_record_is_retried_and_its_topic_waited_for() -> None:
    h = build()
    again = _refuse(h, Refusal("NOT_ENOUGH_REPLICAS", False, "Broker: Not enough in-sync replicas"))
    refused_at = h.clock.now_ms()
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.RETRY  # it was tried: the attempt counts
    [retry] = h.sink.retries()
    assert retry.attempt == 2
    assert again.settled == Position("t", 0, 3)
    # Another message to the same topic, during the quarantine: not produced, not settled
    # either, until the quarantine ends; then produced as its first attempt.
    h.sink.emitted.clear()
    other = h.message(KAFKA_APP, due_in_ms=0, message_id="01JBBBBBBBBBBBBBBBBBBBBBBB")
    h.dispatcher.accept(other, Position("t", 0, 4))
    run(h.dispatcher.fire_due())
    [emit] = h.sink.emitted
    assert emit.at_ms is not None and emit.at_ms >= refused_at + QUARANTINE
    assert [r.destination for r in emit.records] == [True, False]
    [sent] = h.sink.results()
    assert (sent.message_id, sent.outcome, sent.attempt) == (
        other.message_id,
        DeliveryOutcome.SENT,
        1,
    )
    assert emit.settled == Position("t", 0, 4)
    assert h.metric("scheduler_dispatch_destination_waits_total") == 1


def test_deliveries_due_inside_a_quarantine_spend_no_attempt_on_it() -> None:
    """Chaos seed 2027: one DESTINATION_TIMEOUT during a broker kill quarantined the topic for
    10 s, and every delivery due inside that window spent an attempt without being tried; with
    3 attempts 200-400 ms apart, 124 messages ended FAILED. Now they wait for its end."""
    h = build(settings=DispatchSettings(max_attempts=3, backoff_base_ms=200, prefetch_ms=0))
    _refuse(h, TIMEOUT)
    refused_at = h.clock.now_ms()
    [retry] = h.sink.retries()  # the refused one's second attempt, due inside the window
    h.sink.emitted.clear()
    h.clock.advance(retry.due_ms - refused_at)
    inside = [
        h.message(KAFKA_APP, due_in_ms=-i * 50, message_id=f"01JBBBBBBBBBBBBBBBBBBBB{i:03d}")
        for i in range(5)
    ]
    for m in (retry, *inside):
        h.dispatcher.accept(m, None)
    run(h.dispatcher.fire_due())
    results = {r.message_id: r for r in h.sink.results()}
    assert {m: (r.outcome, r.attempt) for m, r in results.items()} == {
        retry.message_id: (DeliveryOutcome.SENT, 2),
        **{m.message_id: (DeliveryOutcome.SENT, 1) for m in inside},
    }
    produced = _produced(h)
    assert set(produced) == set(results)
    assert min(produced.values()) >= refused_at + QUARANTINE
    assert h.sink.retries() == [] and h.sink.dead_letters() == []


def test_an_abort_that_arrives_while_a_delivery_waits_for_its_topic_wins() -> None:
    def abort_while_waiting() -> None:
        if not h.commands._read:
            h.abort_now(m)

    h = build(on_sleep=abort_while_waiting)
    _refuse(h, TIMEOUT)
    h.sink.emitted.clear()
    m = h.message(KAFKA_APP, due_in_ms=0, message_id="01JBBBBBBBBBBBBBBBBBBBBBBB")
    h.dispatcher.accept(m, None)
    run(h.dispatcher.fire_due())
    assert _produced(h) == {}
    [skipped] = h.sink.results()
    assert (skipped.message_id, skipped.error) == (m.message_id, "aborted")


def test_a_message_that_outlives_its_max_event_age_waiting_for_its_topic_is_not_produced() -> None:
    app = replace(KAFKA_APP, policy=DeliveryPolicy(max_event_age_ms=60_000))
    h = build(apps=(app,))
    _refuse(h, TIMEOUT)
    h.sink.emitted.clear()
    now = h.clock.now_ms()
    # first due 55 s ago (a retry, say): 5 s of age left, less than the quarantine
    m = h.message(
        app,
        due_in_ms=0,
        message_id="01JBBBBBBBBBBBBBBBBBBBBBBB",
        send_at_ms=now - 55_000,
        created_ms=now - 60_000,
    )
    h.dispatcher.accept(m, None)
    run(h.dispatcher.fire_due())
    assert _produced(h) == {}
    [failed] = h.sink.results()
    assert failed.outcome is DeliveryOutcome.FAILED
    assert failed.error is not None and "maxEventAgeMs" in failed.error


def test_a_quarantine_longer_than_the_park_bound_parks_the_waiting_delivery() -> None:
    settings = DispatchSettings(
        max_attempts=3,
        backoff_base_ms=500,
        prefetch_ms=0,
        destination_quarantine_ms=5_000,
        park_after_ms=1_000,
    )
    h = build(settings=settings)
    _refuse(h, TIMEOUT)
    h.sink.emitted.clear()
    start = h.clock.now_ms()
    m = h.message(KAFKA_APP, due_in_ms=0, message_id="01JBBBBBBBBBBBBBBBBBBBBBBB")
    h.dispatcher.accept(m, Position("t", 0, 9))
    run(h.dispatcher.fire_due())
    [parked] = h.sink.emitted
    assert parked.at_ms is not None and start + 1_000 <= parked.at_ms < start + 2_000
    [copy] = parked.records
    assert CODECS.due.decode(copy.value) == m
    assert copy.headers == ((PARKED_HEADER, b"0"),)  # the wait counts toward its age
    assert h.sink.results() == []


def test_a_topic_gone_is_forgotten_by_the_existence_cache() -> None:
    h = build()
    _refuse(h, Refusal("UNKNOWN_TOPIC_OR_PART", True, "gone", topic_gone=True))
    check = h.dispatcher._topic_check
    assert isinstance(check, KnownTopics) and check.forgotten == ["dest.topic"]


def test_prefetch_reads_early_but_delivers_exactly_at_the_due_instant() -> None:
    seen: list[int] = []
    h = build(
        lambda r: seen.append(h.clock.now_ms()) or httpx.Response(200),
        settings=DispatchSettings(prefetch_ms=50, max_attempts=3),
    )
    m = h.message(due_in_ms=1_000)
    h.dispatcher.accept(m, None)

    async def scenario() -> None:
        h.clock.advance(949)
        assert h.dispatcher.start_due() == 0
        h.clock.advance(1)  # 50 ms before due: the task starts, reads, waits for the due instant
        assert h.dispatcher.start_due() == 1
        await h.dispatcher.drain()

    run(scenario())
    assert seen == [m.due_ms]


def test_an_abort_arriving_after_prefetch_but_before_due_still_wins() -> None:
    calls: list[httpx.Request] = []
    reads: list[int] = []

    def abort_while_waiting() -> None:
        # called when the firing task waits for the due instant, i.e. after its record read
        assert reads, "the record was not read before the wait"
        h.abort_now(m)

    h = build(
        lambda r: calls.append(r) or httpx.Response(200),
        settings=DispatchSettings(prefetch_ms=50),
        on_sleep=abort_while_waiting,
    )
    m = h.message(due_in_ms=50)
    h.store_record(m)
    states = h.messages.states
    h.messages.states = lambda app, ids: reads.append(1) or states(app, ids)  # type: ignore[method-assign]
    h.dispatcher.accept(m, None)
    assert run(h.dispatcher.fire_due()) == 1
    assert reads == [1]
    assert calls == []
    assert h.sink.results()[0].error == "aborted"


def test_on_shutdown_waiting_deliveries_are_left_unsettled_not_sent() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    h.dispatcher.accept(h.message(due_in_ms=0), Position("t", 0, 1))
    h.dispatcher.stopping = True
    run(h.dispatcher.fire_due())
    assert calls == []
    assert h.sink.emitted == []  # no result, offset not settled: read again after restart


# -- KAFKA deliveries produced ahead (kafka_produce_ahead_ms) ---------------------------------

AHEAD = 5


def ahead_settings(**kw: object) -> DispatchSettings:
    fields: dict[str, object] = {
        "prefetch_ms": 50,
        "kafka_produce_ahead_ms": AHEAD,
        "max_attempts": 3,
    }
    fields.update(kw)
    return DispatchSettings(**fields)  # type: ignore[arg-type]


def test_kafka_is_produced_ahead_into_a_transaction_held_until_the_due_instant() -> None:
    h = build(settings=ahead_settings())
    m = h.message(KAFKA_APP, due_in_ms=1_000)
    h.dispatcher.accept(m, Position("t", 0, 3))

    async def scenario() -> None:
        h.clock.advance(949)
        assert h.dispatcher.start_due() == 0
        h.clock.advance(1)  # prefetch: the task reads, then waits for due - ahead
        assert h.dispatcher.start_due() == 1
        await h.dispatcher.drain()

    run(scenario())
    [batch] = h.sink.emitted
    assert batch.at_ms == m.due_ms - AHEAD  # produced ahead, never earlier
    assert batch.not_before_ms == m.due_ms  # ... into a transaction committed once due
    assert [r.topic for r in batch.records] == ["dest.topic", TOPICS.results]
    assert batch.settled == Position("t", 0, 3)
    [result] = h.sink.results()
    # delivered when the transaction commits: at the due instant at the earliest
    assert (result.outcome, result.finished_ms, result.lateness_ms) == (
        DeliveryOutcome.SENT,
        m.due_ms,
        0,
    )


def test_a_late_kafka_delivery_is_produced_at_once_and_counts_its_lateness() -> None:
    h = build(settings=ahead_settings())
    m = h.message(KAFKA_APP, due_in_ms=-300)
    h.dispatcher.accept(m, None)
    run(h.dispatcher.fire_due())
    [batch] = h.sink.emitted
    assert batch.at_ms == h.clock.now_ms() and batch.not_before_ms == m.due_ms
    [result] = h.sink.results()
    assert (result.finished_ms, result.lateness_ms) == (h.clock.now_ms(), 300)


def test_an_abort_seen_before_the_kafka_fire_instant_prevents_the_delivery() -> None:
    waits: list[int] = []

    def abort_while_waiting() -> None:
        # the task waits for due - ahead after its record read: the abort arrives meanwhile
        waits.append(h.clock.now_ms())
        h.abort_now(m)

    h = build(settings=ahead_settings(), on_sleep=abort_while_waiting)
    m = h.message(KAFKA_APP, due_in_ms=50)
    h.store_record(m)
    h.dispatcher.accept(m, Position("t", 0, 4))
    assert run(h.dispatcher.fire_due()) == 1
    assert waits and all(at < m.due_ms - AHEAD for at in waits)
    assert h.sink.on("dest.topic") == []
    [batch] = h.sink.emitted
    assert batch.not_before_ms is None and batch.settled == Position("t", 0, 4)
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.SKIPPED and result.error == "aborted"


def test_commands_lag_between_guard_minus_ahead_and_guard_holds_kafka_but_not_rest() -> None:
    """Lag 198 ms at the fire instant, guard 200, ahead 5: within the guard for a delivery at
    its due instant (REST), not for one fired 5 ms ahead (KAFKA: 198 + 5 > 200)."""
    guard = SCHEDULING.cancel_guard_ms
    lag = guard - 2
    assert guard - AHEAD < lag <= guard

    # REST: fired at its due instant without waiting for the view
    calls: list[int] = []
    rest_waits: list[int] = []

    def rest_wait() -> None:
        rest_waits.append(h.clock.now_ms())
        h.commands.read()  # (a held REST fire would end, late)

    def receive(request: httpx.Request) -> httpx.Response:
        calls.append(h.clock.now_ms())
        return httpx.Response(200)

    h = build(receive, settings=ahead_settings(), on_sleep=rest_wait)
    h.commands.arrive()  # a record arrived: not at the end any more
    rest = h.message(REST_APP, due_in_ms=lag)
    h.dispatcher.accept(rest, None)
    h.clock.advance(lag)
    assert run(h.dispatcher.fire_due()) == 1
    assert calls == [rest.due_ms] and rest_waits == []

    # KAFKA: its fire instant (due - ahead) has the same lag; it waits until the view catches up
    held: list[tuple[int, int]] = []  # (clock, emits so far) at each wait

    def catch_up_after_a_few_waits() -> None:
        held.append((k.clock.now_ms(), len(k.sink.emitted)))
        if len(held) == 3:
            k.commands.read()

    k = build(settings=ahead_settings(), on_sleep=catch_up_after_a_few_waits)
    k.commands.arrive()
    lagging_since = k.clock.now_ms()
    m = k.message(KAFKA_APP, due_in_ms=lag + AHEAD)
    k.dispatcher.accept(m, None)
    k.clock.advance(lag)  # = due - ahead, within the prefetch
    assert run(k.dispatcher.fire_due()) == 1
    assert held[0] == (lagging_since + lag, 0)  # held at its fire instant, nothing emitted
    assert [emits for _, emits in held] == [0, 0, 0]
    [batch] = k.sink.emitted
    assert batch.at_ms == lagging_since + lag + 3  # after the view caught up, still before due
    assert batch.at_ms < m.due_ms and batch.not_before_ms == m.due_ms
    assert [r.outcome for r in k.sink.results()] == [DeliveryOutcome.SENT]


def test_shutdown_ends_a_delivery_held_by_a_lagging_commands_view() -> None:
    """On shutdown the commands view is no longer polled: a KAFKA fire held for it must give up
    (left unsettled, fired after the restart) instead of keeping drain() waiting forever."""
    lag = SCHEDULING.cancel_guard_ms - 2
    waits: list[int] = []

    def stop_after_a_few_waits() -> None:
        waits.append(k.clock.now_ms())
        if len(waits) == 3:
            k.dispatcher.stopping = True

    k = build(settings=ahead_settings(), on_sleep=stop_after_a_few_waits)
    k.commands.arrive()  # lagging from now on, never caught up
    m = k.message(KAFKA_APP, due_in_ms=lag + AHEAD)
    k.dispatcher.accept(m, Position("t", 0, 1))
    k.clock.advance(lag)

    async def fire_and_drain() -> int:
        started = k.dispatcher.start_due()
        await asyncio.wait_for(k.dispatcher.drain(), timeout=5)
        return started

    assert run(fire_and_drain()) == 1
    assert len(waits) == 3  # it was held, then gave up when the dispatcher stopped
    assert k.sink.emitted == []  # not fired and not settled: its offset stays uncommitted


@pytest.mark.parametrize("ahead", [SCHEDULING.cancel_guard_ms, SCHEDULING.cancel_guard_ms + 1])
def test_producing_ahead_by_the_cancel_guard_or_more_is_refused(ahead: int) -> None:
    with pytest.raises(ValueError, match="below the cancel guard"):
        build(settings=ahead_settings(kafka_produce_ahead_ms=ahead))


def test_producing_ahead_just_below_the_cancel_guard_is_accepted() -> None:
    build(settings=ahead_settings(kafka_produce_ahead_ms=SCHEDULING.cancel_guard_ms - 1))


# Message ids are unique per application, not across applications: a Kafka-native producer picks
# its own ids, so two tenants can hold the same one. Nothing a tenant does to its message may
# touch the other's.
OTHER_REST_APP = replace(REST_APP, app_id="app-rest-2", owner_id="o2")


def test_two_apps_with_the_same_message_id_are_both_delivered() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200), apps=(REST_APP, OTHER_REST_APP))
    mine, theirs = h.message(REST_APP, due_in_ms=100), h.message(OTHER_REST_APP, due_in_ms=100)
    assert mine.message_id == theirs.message_id
    h.dispatcher.accept(mine, None)
    h.dispatcher.accept(theirs, None)
    h.clock.advance(100)
    run(h.dispatcher.fire_due())
    assert len(calls) == 2
    assert sorted(r.app_id for r in h.sink.results()) == [REST_APP.app_id, OTHER_REST_APP.app_id]
    assert {r.outcome for r in h.sink.results()} == {DeliveryOutcome.SENT}


def test_an_abort_of_one_apps_message_does_not_abort_another_apps_message_with_its_id() -> None:
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200), apps=(REST_APP, OTHER_REST_APP))
    mine, theirs = h.message(REST_APP, due_in_ms=500), h.message(OTHER_REST_APP, due_in_ms=500)
    h.dispatcher.accept(mine, None)
    h.dispatcher.accept(theirs, None)
    h.abort_now(theirs)
    h.clock.advance(500)
    run(h.dispatcher.fire_due())
    outcomes = {r.app_id: (r.outcome, r.error) for r in h.sink.results()}
    assert outcomes[OTHER_REST_APP.app_id] == (DeliveryOutcome.SKIPPED, "aborted")
    assert outcomes[REST_APP.app_id][0] is DeliveryOutcome.SENT
    assert len(calls) == 1


def test_an_app_that_cannot_be_read_is_retried_not_dropped() -> None:
    """A failed app read (Cassandra down, or a secret whose key is not in this replica's keyring:
    scheduler.encryption.UnreadableValue) hands the attempts back instead of losing them."""
    calls: list[httpx.Request] = []
    h = build(lambda r: calls.append(r) or httpx.Response(200))
    m = h.message(due_in_ms=0)
    read_app = h.apps.get_app
    failures = [UnreadableValue("value encrypted with key 'k9', not in the keyring")]

    def flaky(app_id: str) -> Application | None:
        if failures:
            raise failures.pop()
        return read_app(app_id)

    h.apps.get_app = flaky  # type: ignore[method-assign]
    h.dispatcher.accept(m, Position("t", 0, 1))
    run(h.dispatcher.fire_due())
    assert calls == [] and len(h.dispatcher.timers) == 1
    assert run(h.dispatcher.fire_due()) == 1
    assert [r.headers[HEADER_MESSAGE_ID] for r in calls] == [m.message_id]
    assert h.sink.emitted[-1].settled == Position("t", 0, 1)
