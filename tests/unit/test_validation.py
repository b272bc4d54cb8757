import pytest

from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import new_message_id
from scheduler.domain.validation import validate_schedule_request
from scheduler.records import ScheduleRequest
from scheduler.settings import SchedulingSettings

pytestmark = pytest.mark.unit

NOW = 1_893_499_200_000
SETTINGS = SchedulingSettings(max_payload_bytes=100)


def request(**changes: object) -> ScheduleRequest:
    base = {
        "message_id": new_message_id(NOW, 7),
        "app_id": "app-1",
        "payload_json": "0",
        "send_at_ms": NOW + 1000,
        "created_ms": NOW,
        "source": "kafka",
    }
    return ScheduleRequest(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", ["0", '""', "false", "null", "[]", '{"a": 1}'])
def test_falsy_and_any_json_payloads_are_valid(payload: str) -> None:
    validate_schedule_request(request(payload_json=payload), SETTINGS)


@pytest.mark.parametrize(
    ("changes", "token"),
    [
        ({"payload_json": "{not json"}, "invalid_payload"),
        ({"payload_json": '"' + "x" * 200 + '"'}, "payload_too_large"),
        ({"message_id": "not-a-ulid"}, "invalid_message_id"),
        ({"app_id": ""}, "invalid_app_id"),
        ({"send_at_ms": 1_700_000}, "invalid_sendAt"),
        ({"send_at_ms": NOW - 2 * 86_400_000}, "invalid_sendAt"),
        ({"send_at_ms": NOW + 200 * 366 * 86_400_000}, "invalid_sendAt"),
        ({"created_ms": 5}, "invalid_created"),
        ({"idempotency_key": ""}, "invalid_idempotency_key"),
        ({"kafka_key": "k" * 300}, "invalid_kafka_key"),
    ],
)
def test_refusals_carry_a_token(changes: dict[str, object], token: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_schedule_request(request(**changes), SETTINGS)
    assert err.value.token == token


def test_horizon_is_judged_at_creation_not_at_reading() -> None:
    # accepted a minute before its due time; read two days later by a lagging consumer: valid
    validate_schedule_request(
        request(created_ms=NOW - 2 * 86_400_000, send_at_ms=NOW - 2 * 86_400_000 + 60_000), SETTINGS
    )
