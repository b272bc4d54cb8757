"""The Kafka-native producer helper (scheduler.producer) with a fake producer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.clock import ManualClock
from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import derived_message_id, is_message_id
from scheduler.domain.validation import validate_schedule_request
from scheduler.domain.window import instant_in_window
from scheduler.kafka.producer import InMemoryProducer
from scheduler.producer import ScheduleError, SchedulerProducer, send_at_ms

from .harness import KAFKA, REQUESTS, SCHEDULING, T0, TOPICS

pytestmark = pytest.mark.unit


def _producer() -> tuple[SchedulerProducer, InMemoryProducer]:
    fake = InMemoryProducer()
    return SchedulerProducer(KAFKA, SCHEDULING, clock=ManualClock(T0), producer=fake), fake


def test_schedule_writes_a_valid_avro_request_keyed_by_app() -> None:
    producer, fake = _producer()
    message_id = producer.schedule("app-1", {"n": 1}, "2026-01-01T05:30:00+05:30", kafka_key="k")
    producer.flush()
    [record] = fake.on(TOPICS.requests)
    assert record.key == b"app-1"
    request = REQUESTS.decode(record.value)
    assert is_message_id(message_id) and request.message_id == message_id
    assert (request.app_id, request.payload_json, request.send_at_ms) == ("app-1", '{"n":1}', T0)
    assert (request.source, request.kafka_key, request.created_ms) == ("kafka", "k", T0)
    validate_schedule_request(request, SCHEDULING)  # what the bucketer checks


def test_idempotency_key_derives_the_same_id_as_http_ingest() -> None:
    producer, _ = _producer()
    first = producer.schedule("app-1", 0, T0 + 5, idempotency_key="order-9")
    assert first == producer.schedule("app-1", 0, T0 + 5, idempotency_key="order-9")
    assert first == derived_message_id("app-1", "order-9")


@pytest.mark.parametrize(
    ("send_at", "expected"),
    [
        (datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))), T0),
        (datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), T0 + 1),  # rounded up
        (T0 + 7, T0 + 7),
        ("2026-01-01T00:00:00Z", T0),
    ],
)
def test_send_at_forms(send_at: datetime | int | str, expected: int) -> None:
    assert send_at_ms(send_at) == expected


@pytest.mark.parametrize(
    ("kwargs", "token"),
    [
        ({"payload": None}, "missing_payload"),
        ({"payload": {1, 2}}, "invalid_payload"),
        ({"send_at": datetime(2026, 1, 1)}, "invalid_sendAt"),  # naive
        ({"send_at": 1_767_225_600}, "invalid_sendAt"),  # seconds
        ({"send_at": "2020-01-01T00:00:00Z"}, "invalid_sendAt"),  # too old
        ({"app_id": ""}, "invalid_app_id"),
        ({"idempotency_key": ""}, "invalid_idempotency_key"),
        ({"payload": "x" * 300_000}, "payload_too_large"),
    ],
)
def test_bad_requests_fail_before_anything_is_produced(
    kwargs: dict[str, object], token: str
) -> None:
    producer, fake = _producer()
    args: dict[str, object] = {"app_id": "app-1", "payload": 1, "send_at": T0, **kwargs}
    with pytest.raises(ValidationError) as caught:
        producer.schedule(**args)  # type: ignore[arg-type]
    assert caught.value.token == token
    producer.flush()
    assert fake.records == []


def test_flush_failure_is_a_schedule_error() -> None:
    producer, fake = _producer()
    producer.schedule("app-1", 1, T0)
    fake.fail_next_flush = 1
    with pytest.raises(ScheduleError):
        producer.flush()


def test_a_flexible_window_picks_an_instant_within_it_the_same_for_a_retried_key() -> None:
    producer, fake = _producer()
    window = 600_000
    first = producer.schedule("app-1", 1, T0 + 60_000, "order-1", flexible_window_ms=window)
    again = producer.schedule("app-1", 1, T0 + 60_000, "order-1", flexible_window_ms=window)
    assert first == again
    producer.flush()
    sends = [REQUESTS.decode(r.value).send_at_ms for r in fake.on(TOPICS.requests)]
    assert sends[0] == sends[1] and T0 + 60_000 <= sends[0] <= T0 + 60_000 + window
    others = {
        instant_in_window(f"id-{i}", T0, window) - T0 for i in range(50)
    }  # spread, not one offset
    assert len(others) > 40 and all(0 <= o <= window for o in others)
    with pytest.raises(ValidationError) as refused:
        producer.schedule("app-1", 1, T0 + 60_000, flexible_window_ms=86_400_001)
    assert refused.value.token == "invalid_flexibleWindowMs"
