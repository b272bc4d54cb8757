"""Decision 6 on its own: a (re)started dispatcher reloads the attempts settled since a point, so
a ring record re-read after a crash is not fired again, while everything else still is."""

from __future__ import annotations

import pytest

from scheduler.records import DeliveryOutcome, DeliveryResult, DueMessage
from scheduler_releaser.dispatcher.feeds import load_results
from scheduler_releaser.dispatcher.timers import TimerQueue

from .fake_kafka import FakeConsumer, FakeKafka
from .harness import CODECS, TOPICS

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000
ID = "01JAAAAAAAAAAAAAAAAAAAAAAA"


def result(app_id: str, generation: int = 0, attempt: int = 1) -> DeliveryResult:
    return DeliveryResult(
        message_id=ID,
        app_id=app_id,
        generation=generation,
        attempt=attempt,
        outcome=DeliveryOutcome.SENT,
        due_ms=T0,
        finished_ms=T0 + 5,
        lateness_ms=5,
    )


def due(app_id: str, generation: int = 0, attempt: int = 1) -> DueMessage:
    return DueMessage(
        message_id=ID,
        app_id=app_id,
        generation=generation,
        attempt=attempt,
        due_ms=T0,
        send_at_ms=T0,
        created_ms=T0 - 1_000,
        payload_json="{}",
    )


def test_settled_attempts_since_the_start_point_are_not_held_again() -> None:
    kafka = FakeKafka()
    kafka.create(TOPICS.results, 3)
    encode = CODECS.result.encode
    kafka.produce(TOPICS.results, 0, encode(result("app-old")), T0 - 60_000)  # before `since`
    kafka.produce(TOPICS.results, 1, encode(result("app-a")), T0 + 10)
    kafka.produce(TOPICS.results, 2, encode(result("app-a", attempt=2)), T0 + 20)
    kafka.produce(TOPICS.results, 2, b"not avro", T0 + 30)  # skipped, not fatal
    timers = TimerQueue()

    loader = FakeConsumer(kafka, "reload", eof=True)  # as the runtime builds it
    loaded = load_results(loader, TOPICS.results, T0 - 1_000, timers, CODECS)

    assert loaded == 2
    assert not timers.push(due("app-a"))  # settled: a re-read ring record is refused
    assert not timers.push(due("app-a", attempt=2))
    assert timers.push(due("app-a", attempt=3))  # a later retry passes
    assert timers.push(due("app-a", generation=1))  # and a redrive
    assert timers.push(due("app-b"))  # another app's message with the same id is its own
    assert timers.push(due("app-old"))  # settled before the start point: the record decides
