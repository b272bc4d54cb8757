"""Validation of a schedule request, the same for HTTP ingest and Kafka-native producers."""

from __future__ import annotations

import json

from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import is_message_id
from scheduler.domain.sendat import MAX_EPOCH_MS, MIN_EPOCH_MS, check_horizon
from scheduler.records import ScheduleRequest
from scheduler.settings import SchedulingSettings

MAX_KEY_CHARS = 256
MAX_APP_ID_CHARS = 64


def validate_payload_json(payload_json: str, max_bytes: int) -> None:
    size = len(payload_json.encode())
    if size > max_bytes:
        raise ValidationError(
            "payload_too_large", f"payload is {size} bytes; the limit is {max_bytes} bytes"
        )
    try:
        json.loads(payload_json)
    except ValueError as exc:
        raise ValidationError("invalid_payload", f"payload is not valid JSON: {exc}") from exc


def validate_schedule_request(request: ScheduleRequest, settings: SchedulingSettings) -> None:
    """Raise `ValidationError` (with the API token) if the request must be refused.

    The horizon is checked against the request's own `created_ms`, not the reader's clock, so a
    consumer catching up after an outage never refuses what was valid when it was accepted.
    """
    if not request.app_id or len(request.app_id) > MAX_APP_ID_CHARS:
        raise ValidationError("invalid_app_id", "app_id must be 1 to 64 characters")
    if not is_message_id(request.message_id):
        raise ValidationError("invalid_message_id", "message_id must be a 26-character ULID")
    if not MIN_EPOCH_MS <= request.created_ms <= MAX_EPOCH_MS:
        raise ValidationError("invalid_created", "created_ms is not epoch milliseconds")
    if not MIN_EPOCH_MS <= request.send_at_ms <= MAX_EPOCH_MS:
        raise ValidationError("invalid_sendAt", "send_at_ms is not epoch milliseconds")
    check_horizon(
        request.send_at_ms, request.created_ms, settings.past_window_ms, settings.max_future_ms
    )
    validate_payload_json(request.payload_json, settings.max_payload_bytes)
    for name, value in (
        ("idempotency_key", request.idempotency_key),
        ("kafka_key", request.kafka_key),
    ):
        if value is not None and not 0 < len(value) <= MAX_KEY_CHARS:
            raise ValidationError(
                f"invalid_{name}", f"{name} must be 1 to {MAX_KEY_CHARS} characters"
            )
