"""Lateness (client-facing) and dispatch delay (the SLO figure) with a ManualClock.

Definitions: docs/ARCHITECTURE.md, "Lateness". Lateness = delivered - the attempt's due instant
(sendAt for a first attempt); dispatch delay = delivered - max(the attempt's due instant, the
message's acceptance)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest

from scheduler.records import DeliveryOutcome, DueMessage
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.dispatcher.verdict import dispatch_delay_ms, lateness_ms

from .harness import KAFKA_APP, Harness, build

pytestmark = pytest.mark.unit

FIVE_MINUTES = 300_000


def _seconds(h: Harness, name: str, destination: str) -> tuple[float, float]:
    """(count, sum) of one destination's histogram."""
    labels = {"destination": destination}
    return h.metric(f"{name}_count", labels), h.metric(f"{name}_sum", labels)


def _past_send_at(h: Harness, app_kw: dict[str, object] | None = None) -> DueMessage:
    """sendAt five minutes ago, accepted 400 ms ago: what ingest and the bucketer make of it."""
    now = h.clock.now_ms()
    send_at = now - FIVE_MINUTES
    message = h.message(**(app_kw or {}), due_in_ms=-FIVE_MINUTES)
    assert message.due_ms == message.send_at_ms == send_at  # a first attempt is due at sendAt
    return replace(message, created_ms=now - 400)


def test_a_past_send_at_delivered_promptly_has_a_small_dispatch_delay_and_a_large_lateness() -> (
    None
):
    h = build(lambda r: httpx.Response(204))
    message = _past_send_at(h)
    h.dispatcher.accept(message, Position("t", 0, 1))
    asyncio.run(h.dispatcher.fire_due())
    [result] = h.sink.results()
    assert result.outcome is DeliveryOutcome.SENT
    assert result.lateness_ms == FIVE_MINUTES  # latenessMs: delivered - sendAt, as before
    assert _seconds(h, "scheduler_dispatch_lateness_seconds", "REST") == (1, 300.0)
    assert _seconds(h, "scheduler_dispatch_delay_seconds", "REST") == (1, 0.4)


def test_kafka_past_send_at_counts_from_acceptance_to_the_commit() -> None:
    h = build()
    message = _past_send_at(h, {"app": KAFKA_APP})
    h.dispatcher.accept(message, Position("t", 0, 1))
    asyncio.run(h.dispatcher.fire_due())
    [batch] = h.sink.emitted
    assert batch.on_committed is not None
    h.sink.commit(h.clock.now_ms() + 20)  # the transaction commits 20 ms later
    assert _seconds(h, "scheduler_dispatch_lateness_seconds", "KAFKA") == (1, 300.02)
    assert _seconds(h, "scheduler_dispatch_delay_seconds", "KAFKA") == (1, 0.42)


def test_a_retrys_backoff_is_not_dispatch_delay() -> None:
    answers = iter([httpx.Response(503), httpx.Response(200)])
    h = build(lambda r: next(answers))
    first = h.message(due_in_ms=0)
    h.dispatcher.accept(first, None)
    asyncio.run(h.dispatcher.fire_due())
    [retry] = h.sink.retries()
    assert retry.due_ms > first.due_ms and retry.send_at_ms == first.send_at_ms
    # the retry arrives through the ring and fires at its due instant (the backoff later)
    h.dispatcher.accept(retry, None)
    h.clock.set(retry.due_ms)
    asyncio.run(h.dispatcher.fire_due())
    assert [r.outcome for r in h.sink.results()] == [DeliveryOutcome.RETRY, DeliveryOutcome.SENT]
    assert h.sink.results()[-1].finished_ms == retry.due_ms
    # only the delivered attempt is observed, from its own due instant: no backoff in it
    assert _seconds(h, "scheduler_dispatch_delay_seconds", "REST") == (1, 0.0)
    assert _seconds(h, "scheduler_dispatch_lateness_seconds", "REST") == (1, 0.0)


def test_a_late_dispatcher_is_dispatch_delay() -> None:
    h = build(lambda r: httpx.Response(200))
    message = h.message(due_in_ms=1_000)
    h.dispatcher.accept(message, None)
    # the dispatcher does not get to it until 2.5 s after its due instant (down, behind, busy)
    h.clock.set(message.due_ms + 2_500)
    asyncio.run(h.dispatcher.fire_due())
    [result] = h.sink.results()
    assert (result.outcome, result.lateness_ms) == (DeliveryOutcome.SENT, 2_500)
    assert _seconds(h, "scheduler_dispatch_delay_seconds", "REST") == (1, 2.5)
    assert _seconds(h, "scheduler_dispatch_lateness_seconds", "REST") == (1, 2.5)


def test_a_late_retry_is_dispatch_delay_from_its_own_due_instant() -> None:
    answers = iter([httpx.Response(500), httpx.Response(200)])
    h = build(lambda r: next(answers))
    h.dispatcher.accept(h.message(due_in_ms=0), None)
    asyncio.run(h.dispatcher.fire_due())
    [retry] = h.sink.retries()
    h.dispatcher.accept(retry, None)
    h.clock.set(retry.due_ms + 750)
    asyncio.run(h.dispatcher.fire_due())
    assert _seconds(h, "scheduler_dispatch_delay_seconds", "REST") == (1, 0.75)


def test_the_definitions_attempt_by_attempt() -> None:
    created, send_at = 1_000_000, 700_000  # sendAt 300 s before acceptance
    first = DueMessage(
        message_id="m",
        app_id="a",
        generation=0,
        attempt=1,
        due_ms=send_at,
        send_at_ms=send_at,
        created_ms=created,
        payload_json="{}",
    )
    assert (lateness_ms(first, created + 400), dispatch_delay_ms(first, created + 400)) == (
        300_400,
        400,
    )
    # a future sendAt: both count from sendAt
    future = replace(first, due_ms=created + 60_000, send_at_ms=created + 60_000)
    assert (lateness_ms(future, created + 60_015), dispatch_delay_ms(future, created + 60_015)) == (
        15,
        15,
    )
    # a retry is due at its backoff instant: neither counts the backoff
    retry = replace(first, attempt=2, due_ms=created + 5_000)
    assert (lateness_ms(retry, created + 5_010), dispatch_delay_ms(retry, created + 5_010)) == (
        10,
        10,
    )
    # a redrive (new generation) is due at the instant it was issued
    redrive = replace(first, generation=1, due_ms=created + 86_400_000)
    delivered = created + 86_400_000 + 30
    assert (lateness_ms(redrive, delivered), dispatch_delay_ms(redrive, delivered)) == (30, 30)
    # ingest's clock ahead of the dispatcher's: never negative
    assert dispatch_delay_ms(first, created - 5) == 0
