"""Parsing schedule requests from JSON, the same for the single and the batch route.

Only `payload`, `sendAt`, `idempotencyKey`, `kafkaKey` and `flexibleWindowMs` are accepted; any
other field is
refused (`unknown_field`), so nothing a client invents is ever stored. `payload` may be any JSON
value except null: 0, "", false, [] and {} are valid payloads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scheduler.domain.errors import ValidationError
from scheduler.domain.sendat import parse_send_at
from scheduler.domain.validation import MAX_KEY_CHARS
from scheduler.domain.window import MAX_WINDOW_MS, check_window

ALLOWED_FIELDS = frozenset({"payload", "sendAt", "idempotencyKey", "kafkaKey", "flexibleWindowMs"})
# The token of a key of the wrong length predates this module (it comes from the shared
# validation of `ScheduleRequest`, whose fields are snake_case); the message names the JSON field.
_LENGTH_TOKENS = {"idempotencyKey": "invalid_idempotency_key", "kafkaKey": "invalid_kafka_key"}


@dataclass(frozen=True)
class Draft:
    """A syntactically valid request, before id, clock and horizon are applied."""

    payload_json: str
    send_at_ms: int
    idempotency_key: str | None
    kafka_key: str | None
    flexible_window_ms: int | None = None  # deliver within [sendAt, sendAt + this]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity); raises ValidationError(invalid_json)."""
    if not body.strip():
        raise ValidationError("invalid_json", "a JSON body is required")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ValidationError("invalid_json", f"the body is not valid JSON: {exc}") from None


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_item(raw: Any) -> Draft:
    if not isinstance(raw, dict):
        raise ValidationError("invalid_request", "a message must be a JSON object")
    unknown = sorted(set(raw) - ALLOWED_FIELDS)
    if unknown:
        raise ValidationError(
            "unknown_field",
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
        )
    if "payload" not in raw or raw["payload"] is None:
        raise ValidationError("missing_payload", "payload is required (any JSON value but null)")
    send_at_ms = parse_send_at(raw.get("sendAt"))
    return Draft(
        payload_json=dumps(raw["payload"]),
        send_at_ms=send_at_ms,
        idempotency_key=_optional_string(raw, "idempotencyKey"),
        kafka_key=_optional_string(raw, "kafkaKey"),
        flexible_window_ms=check_window(raw.get("flexibleWindowMs")),
    )


def _optional_string(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"invalid_{name}", f"{name} must be a string")
    if not 0 < len(value) <= MAX_KEY_CHARS:
        raise ValidationError(
            _LENGTH_TOKENS[name], f"{name} must be 1 to {MAX_KEY_CHARS} characters"
        )
    return value


# OpenAPI of the bodies parsed here (documented by hand: these routes parse the body themselves
# so that every error has the API's token, e.g. missing_payload).
SCHEDULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["payload", "sendAt"],
    "additionalProperties": False,
    "properties": {
        "payload": {"description": 'any JSON value except null (0, "", false are valid)'},
        "sendAt": {
            "description": "RFC 3339 with an offset, or epoch milliseconds (>= 10^11)",
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": 100000000000},
            ],
        },
        "idempotencyKey": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "description": "one message per key and application: repeating the same request"
            " (same payload, sendAt and kafkaKey) answers the first one's message with"
            " duplicate=true; another request under a used key is refused with 409"
            " idempotency_conflict (in a batch: that item)",
        },
        "kafkaKey": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "description": "record key for KAFKA apps (default: the message id)",
        },
        "flexibleWindowMs": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_WINDOW_MS,
            "description": "deliver at an instant within [sendAt, sendAt + this] that the message"
            " id picks; the message is stored, guarded and measured with that instant",
        },
    },
}


def batch_schema(limit: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["messages"],
        "additionalProperties": False,
        "properties": {"messages": {"type": "array", "maxItems": limit, "items": SCHEDULE_SCHEMA}},
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a required JSON body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
