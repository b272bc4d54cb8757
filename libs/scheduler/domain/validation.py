"""Validation of a schedule request and of a recurring schedule's definition, the same for HTTP
ingest, Kafka-native producers and the bucketer."""

from __future__ import annotations

import json
from typing import cast

from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import is_message_id
from scheduler.domain.recurrence import CatchUpPolicy, Recurrence
from scheduler.domain.sendat import MAX_EPOCH_MS, MIN_EPOCH_MS, check_horizon
from scheduler.domain.window import INVALID_WINDOW, check_window
from scheduler.records import ScheduleDefinition, ScheduleOperation, ScheduleRequest
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


def definition_recurrence(
    definition: ScheduleDefinition, default_start_ms: int | None
) -> Recurrence:
    """The timing of a PUT (`default_start_ms` stands for a null `start_ms`); raises
    ValidationError with the API's token."""
    d = definition
    return Recurrence(
        expression="" if d.expression is None else d.expression,  # "" answers "is required"
        timezone="UTC" if d.timezone is None else d.timezone,
        start_ms=default_start_ms if d.start_ms is None else d.start_ms,
        end_ms=d.end_ms,
        max_occurrences=d.max_occurrences,
        # a string: the constructor checks it is a policy (invalid_catchUp)
        catch_up=cast(CatchUpPolicy, "latest" if d.catch_up is None else d.catch_up),
        catch_up_limit=d.catch_up_limit,
    )


def validate_schedule_definition(
    definition: ScheduleDefinition, scheduling: SchedulingSettings
) -> None:
    """Raise ValidationError (the API's token) for a definition the bucketer would refuse
    without reading any store: the same for this producer and the bucketer. A PUT's timing is
    checked as for a new schedule (start null = issued_ms)."""
    d = definition
    if not d.app_id or len(d.app_id) > MAX_APP_ID_CHARS:
        raise ValidationError("invalid_app_id", "app_id must be 1 to 64 characters")
    if not is_message_id(d.schedule_id):
        raise ValidationError("invalid_schedule_id", "schedule_id must be a 26-character ULID")
    if not MIN_EPOCH_MS <= d.issued_ms <= MAX_EPOCH_MS:
        raise ValidationError("invalid_issued", "issued_ms is not epoch milliseconds")
    if d.operation is not ScheduleOperation.PUT:
        return
    definition_recurrence(d, d.issued_ms)
    if d.payload_json is None:
        raise ValidationError("missing_payload", "payload is required (any JSON value but null)")
    validate_payload_json(d.payload_json, scheduling.max_payload_bytes)
    if json.loads(d.payload_json) is None:  # as over HTTP: null is no payload
        raise ValidationError("missing_payload", "payload is required (any JSON value but null)")
    if d.kafka_key is not None and not 0 < len(d.kafka_key) <= MAX_KEY_CHARS:
        raise ValidationError(
            "invalid_kafka_key", f"kafka_key must be 1 to {MAX_KEY_CHARS} characters"
        )
    if d.flexible_window_ms is not None and check_window(d.flexible_window_ms) is None:
        raise ValidationError(INVALID_WINDOW, "flexible_window_ms must be 1 or more (or null)")
