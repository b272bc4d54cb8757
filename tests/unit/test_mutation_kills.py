"""Unit tests written for mutants of `make mutation` that the other tests let live
(docs/TESTING.md, "Mutation testing"): each pins a boundary or a value the rest do not."""

from __future__ import annotations

import re

import pytest

from scheduler.domain.backoff import Backoff
from scheduler.domain.buckets import DAY_MS, ERA_DAYS, bucket_start, index_day, index_era, shard_of
from scheduler.domain.errors import ValidationError
from scheduler.domain.idempotency import claim_ttl_ms, fingerprint
from scheduler.domain.ids import new_message_id
from scheduler.domain.lateness import dispatch_delay_of
from scheduler.domain.placement import claimed
from scheduler.domain.sendat import MAX_EPOCH_MS, check_horizon, parse_rfc3339_ms, parse_send_at
from scheduler.domain.status import (
    MAX_ATTEMPT,
    MAX_GENERATION,
    Status,
    TransitionError,
    check_transition,
    precedence,
)
from scheduler.domain.validation import validate_payload_json, validate_schedule_request
from scheduler.records import DeadLetter, DeliveryOutcome, DueMessage, ScheduleRequest
from scheduler.settings import SchedulingSettings
from scheduler_releaser.dispatcher.verdict import (
    AttemptKind,
    AttemptOutcome,
    classify_status,
    settle,
    status_reason,
)

pytestmark = pytest.mark.unit

NOW = 1_893_456_000_000  # 2030-01-01T00:00:00Z
MESSAGE_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


# --- the dispatcher's decisions (verdict.py) --------------------------------------------------


def test_http_status_boundaries() -> None:
    assert [classify_status(s) for s in (199, 200, 299, 300, 301)] == [
        AttemptKind.PERMANENT,
        AttemptKind.SENT,
        AttemptKind.SENT,
        AttemptKind.PERMANENT,
        AttemptKind.PERMANENT,
    ]
    assert [status_reason(s) for s in (299, 300, 301, 399, 400, 408, 429)] == [
        "2xx",
        "redirect",
        "redirect",
        "redirect",
        "4xx",
        "408",
        "429",
    ]


def due(attempt: int = 1, kafka_key: str | None = "k") -> DueMessage:
    return DueMessage(
        message_id=MESSAGE_ID,
        app_id="app-1",
        generation=2,
        attempt=attempt,
        due_ms=NOW,
        send_at_ms=NOW - 5,
        created_ms=NOW - 10,
        payload_json='{"a": 1}',
        kafka_key=kafka_key,
    )


BACKOFF = Backoff(max_attempts=3, base_ms=1_000, factor=2.0, jitter=0.2)


def test_a_retry_keeps_everything_but_the_attempt_and_its_jittered_due() -> None:
    outcome = AttemptOutcome(AttemptKind.RETRYABLE, "5xx", http_status=503, body_excerpt="busy")
    s = settle(due(), outcome, NOW + 7, BACKOFF)
    assert s.result.outcome is DeliveryOutcome.RETRY
    assert (s.result.http_status, s.result.error) == (503, "5xx: busy")
    # the pinned draw of (MESSAGE_ID, 1) is 0.7776...: 1,000 ms + 20 % x 0.555... = 1,111 ms
    assert s.retry == DueMessage(
        message_id=MESSAGE_ID,
        app_id="app-1",
        generation=2,
        attempt=2,
        due_ms=NOW + 7 + 1_111,
        send_at_ms=NOW - 5,
        created_ms=NOW - 10,
        payload_json='{"a": 1}',
        kafka_key="k",
    )
    assert s.dead_letter is None


def test_a_sent_attempt_keeps_its_http_status() -> None:
    s = settle(due(), AttemptOutcome(AttemptKind.SENT, "2xx", http_status=204), NOW + 3, BACKOFF)
    assert (s.result.outcome, s.result.http_status, s.result.lateness_ms) == (
        DeliveryOutcome.SENT,
        204,
        3,
    )
    assert s.retry is None and s.dead_letter is None


def test_a_permanent_failure_is_dead_lettered_whole_at_once() -> None:
    outcome = AttemptOutcome(AttemptKind.PERMANENT, "4xx", http_status=410, body_excerpt="gone")
    s = settle(due(), outcome, NOW + 9, BACKOFF)
    assert s.retry is None
    assert (s.result.outcome, s.result.error) == (DeliveryOutcome.FAILED, "4xx: gone")
    assert s.dead_letter == DeadLetter(
        message_id=MESSAGE_ID,
        app_id="app-1",
        generation=2,
        attempts=1,
        due_ms=NOW,
        failed_ms=NOW + 9,
        payload_json='{"a": 1}',
        last_error="4xx",
        last_http_status=410,
        body_excerpt="gone",
    )


def test_the_error_names_the_error_before_the_body_excerpt() -> None:
    outcome = AttemptOutcome(AttemptKind.PERMANENT, "4xx", 400, "bad field", "no")
    s = settle(due(), outcome, NOW, BACKOFF)
    assert s.result.error == "bad field: no"
    assert s.dead_letter is not None and s.dead_letter.last_error == "bad field"


# --- status precedence: the Cassandra cell timestamps are a stored format --------------------


def test_precedence_values_are_pinned() -> None:
    """Cell timestamps written by one version are compared with the next one's: the layout
    (generation 22 bits | terminal 1 | attempt 16 | rank 8, plus 1) is stored data. A READY
    written by a store keeps the rank every READY had before the accepted READY got rank 0, so
    an old writer's READY reads as stored (docs/ARCHITECTURE.md, "Released messages")."""
    assert precedence(Status.READY, 0, 1, stored=True) == (1 << 8 | 1) + 1
    assert precedence(Status.READY, 0, 1) == (1 << 8 | 0) + 1
    assert precedence(Status.QUEUED, 0, 3) == (3 << 8 | 2) + 1
    assert precedence(Status.SENT, 0, 3) == (1 << 24 | 5) + 1
    assert precedence(Status.FAILED, 7, 2) == (7 << 25 | 1 << 24 | 3) + 1
    assert precedence(Status.ABORTED, 1, 9) == (1 << 25 | 1 << 24 | 4) + 1
    top = precedence(Status.SENT, MAX_GENERATION, MAX_ATTEMPT)
    assert top == (MAX_GENERATION << 25 | 1 << 24 | 5) + 1 and top < 1 << 63
    assert precedence(Status.QUEUED, 0, MAX_ATTEMPT) == (MAX_ATTEMPT << 8 | 2) + 1
    for generation, attempt in ((MAX_GENERATION + 1, 0), (-1, 0), (0, MAX_ATTEMPT + 1), (0, -1)):
        with pytest.raises(ValueError, match=r"(generation|attempt) -?\d+ out of range"):
            precedence(Status.READY, generation, attempt)


def test_a_refused_transition_names_both_statuses() -> None:
    with pytest.raises(TransitionError, match=r"^a message cannot go from SENT to READY$"):
        check_transition(Status.SENT, Status.READY)


# --- buckets and ids -------------------------------------------------------------------------


def test_bucket_and_index_boundaries() -> None:
    with pytest.raises(ValueError, match=r"^bucket width must be positive$"):
        bucket_start(5, 0)
    assert index_day(DAY_MS + 60_000) == 1 and isinstance(index_day(DAY_MS + 60_000), int)
    assert index_day(DAY_MS - 1) == 0


def test_ulid_timestamp_and_random_bounds() -> None:
    last = (1 << 48) - 1
    assert new_message_id(last, 0) == "7ZZZZZZZZZ" + "0" * 16
    for bad in (1 << 48, -1):
        with pytest.raises(ValueError, match=r"^timestamp out of ULID range$"):
            new_message_id(bad, 0)
    # the random part keeps exactly its 80 bits
    assert new_message_id(0, (1 << 80) - 1) == "0" * 10 + "Z" * 16
    assert new_message_id(0, 1 << 80) == "0" * 26
    assert new_message_id(0, (1 << 80) - 2) == "0" * 10 + "Z" * 15 + "Y"
    # drawn at random: 80 bits, never more, and not the same twice
    drawn = {new_message_id(0) for _ in range(64)}
    assert len(drawn) == 64 and all(m.startswith("0" * 10) for m in drawn)
    assert any(m[10] in "89ABCDEFGHJKMNPQRSTVWXYZ" for m in drawn)  # the top random bits are used


# --- sendAt and request validation: the API's error tokens and messages ----------------------


def refused(call: object, *args: object) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        call(*args)  # type: ignore[operator]
    assert str(caught.value) == caught.value.message
    return caught.value.token, caught.value.message


NUMERIC_STRING = (
    "sendAt '1767225600000' is a string of digits: epoch milliseconds must be a JSON number"
    ' ("sendAt": 1767225600000, without quotes), or send an RFC 3339 string'
    " such as 2030-01-01T12:00:00Z"
)
NOT_RFC3339 = (
    "sendAt 'tomorrow' is not an RFC 3339 timestamp with an offset "
    "(e.g. 2030-01-01T12:00:00Z or 2030-01-01T17:30:00+05:30)"
)
RFC_OR_MS = "sendAt must be an RFC 3339 string or epoch milliseconds"


@pytest.mark.parametrize(
    ("value", "token", "message"),
    [
        (None, "missing_sendAt", "sendAt is required"),
        ("  ", "missing_sendAt", "sendAt is empty"),
        (True, "invalid_sendAt", RFC_OR_MS),
        ([1], "invalid_sendAt", RFC_OR_MS),
        (1.5e12 + 0.5, "invalid_sendAt", "sendAt in epoch milliseconds must be a whole number"),
        (
            1_767_225_600,
            "invalid_sendAt",
            "sendAt 1767225600 is too small for epoch milliseconds (seconds were probably"
            " meant; multiply by 1000)",
        ),
        ("1767225600000", "invalid_sendAt", NUMERIC_STRING),
        ("tomorrow", "invalid_sendAt", NOT_RFC3339),
        (
            MAX_EPOCH_MS + 1,
            "invalid_sendAt",
            f"sendAt {MAX_EPOCH_MS + 1} is outside the supported range",
        ),
    ],
)
def test_send_at_refusals_answer_their_token_and_message(
    value: object, token: str, message: str
) -> None:
    assert refused(parse_send_at, value) == (token, message)


def test_send_at_bounds_and_calendar() -> None:
    assert parse_send_at(MAX_EPOCH_MS) == MAX_EPOCH_MS
    assert parse_send_at("9999-12-31T23:59:59.999Z") == MAX_EPOCH_MS
    # leap years: every 4th, not every 100th, but every 400th
    assert parse_rfc3339_ms("2000-02-29T00:00:00Z") == 951_782_400_000
    assert parse_rfc3339_ms("2024-02-29T00:00:00Z") == 1_709_164_800_000
    for not_a_day in ("2100-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2030-01-01T00:60:00Z"):
        assert refused(parse_rfc3339_ms, not_a_day) == (
            "invalid_sendAt",
            f"sendAt {not_a_day!r} is not a valid calendar date and time",
        )
    # offsets, signed, with minutes; an instant is an int (an Avro long), never a float
    assert parse_rfc3339_ms("2030-01-01T05:30:00+05:30") == NOW
    assert type(parse_rfc3339_ms("2030-01-01T05:30:00+05:30")) is int
    assert type(parse_rfc3339_ms("2029-12-31T20:15:00.5-03:45")) is int
    assert parse_rfc3339_ms("2029-12-31T20:15:00-03:45") == NOW
    # sub-millisecond fractions round up, never down
    assert parse_rfc3339_ms("2030-01-01T00:00:00.000000001Z") == NOW + 1
    assert parse_rfc3339_ms("2030-01-01T00:00:00.001000001Z") == NOW + 2
    assert parse_rfc3339_ms("2030-01-01T00:00:00.999Z") == NOW + 999


def test_horizon_refusals_say_the_limits() -> None:
    assert refused(check_horizon, NOW - 86_400_001, NOW, 86_400_000, 10 * DAY_MS) == (
        "invalid_sendAt",
        "sendAt is more than 86400 s in the past; a past sendAt within that window means"
        " 'deliver now'",
    )
    assert refused(check_horizon, NOW + 10 * DAY_MS + 1, NOW, 1_500, 10 * DAY_MS) == (
        "invalid_sendAt",
        "sendAt is more than 10 days in the future",
    )
    check_horizon(NOW - 86_400_000, NOW, 86_400_000, 0)  # the window's edges are inside
    check_horizon(NOW + 5, NOW, 0, 5)


def test_payload_limit_is_inclusive_and_refusals_say_why() -> None:
    validate_payload_json('"abc"', 5)
    assert refused(validate_payload_json, '"abcd"', 5) == (
        "payload_too_large",
        "payload is 6 bytes; the limit is 5 bytes",
    )
    token, message = refused(validate_payload_json, "{", 100)
    assert token == "invalid_payload"
    assert re.fullmatch(r"payload is not valid JSON: Expecting .+", message), message


def request(**changes: object) -> ScheduleRequest:
    base: dict[str, object] = {
        "message_id": new_message_id(NOW, 7),
        "app_id": "a" * 64,
        "payload_json": "0",
        "send_at_ms": NOW + 1000,
        "created_ms": NOW,
        "source": "kafka",
        "idempotency_key": "k",
        "kafka_key": "x" * 256,
    }
    return ScheduleRequest(**{**base, **changes})  # type: ignore[arg-type]


SETTINGS = SchedulingSettings(max_future_ms=300 * 365 * DAY_MS, past_window_ms=10**15)


def test_request_bounds_are_inclusive() -> None:
    validate_schedule_request(request(), SETTINGS)  # 64-char app, 1- and 256-char keys
    validate_schedule_request(request(created_ms=10**11, send_at_ms=10**11), SETTINGS)
    late = MAX_EPOCH_MS
    validate_schedule_request(request(created_ms=late, send_at_ms=late), SETTINGS)


@pytest.mark.parametrize(
    ("changes", "token", "message"),
    [
        ({"app_id": "a" * 65}, "invalid_app_id", "app_id must be 1 to 64 characters"),
        ({"message_id": "x"}, "invalid_message_id", "message_id must be a 26-character ULID"),
        ({"created_ms": 10**11 - 1}, "invalid_created", "created_ms is not epoch milliseconds"),
        (
            {"send_at_ms": MAX_EPOCH_MS + 1},
            "invalid_sendAt",
            "send_at_ms is not epoch milliseconds",
        ),
        (
            {"idempotency_key": ""},
            "invalid_idempotency_key",
            "idempotency_key must be 1 to 256 characters",
        ),
        ({"kafka_key": "x" * 257}, "invalid_kafka_key", "kafka_key must be 1 to 256 characters"),
    ],
)
def test_request_refusals_answer_their_token_and_message(
    changes: dict[str, object], token: str, message: str
) -> None:
    assert refused(validate_schedule_request, request(**changes), SETTINGS) == (token, message)


def test_index_eras_and_the_recorded_dispatch_delay() -> None:
    assert [index_era(d) for d in (0, ERA_DAYS - 1, ERA_DAYS, 3 * ERA_DAYS + 5)] == [0, 0, 1, 3]
    # accepted before due: the whole lateness is dispatch delay
    assert dispatch_delay_of(40, due_ms=NOW, created_ms=NOW - 1_000) == 40
    # a past sendAt accepted 300 ms after it: only what came after the acceptance counts
    assert dispatch_delay_of(400, due_ms=NOW, created_ms=NOW + 300) == 100
    # delivered before the acceptance instant (clock skew between hosts): never negative
    assert dispatch_delay_of(100, due_ms=NOW, created_ms=NOW + 300) == 0


def test_shard_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^shard count must be positive$"):
        shard_of("01ARZ3NDEKTSV4RRFFQ69G5FAV", 0)


def test_a_claim_covers_the_buckets_before_it_not_the_one_it_ends_at() -> None:
    minute = 60_000
    assert claimed(minute - 1, minute, minute)
    assert not claimed(minute, minute, minute)  # claimed_up_to_ms is an exclusive end


def test_idempotency_claims_outlive_the_requests_topic_by_a_day() -> None:
    assert claim_ttl_ms(7 * DAY_MS) == 8 * DAY_MS


def test_fingerprints_hash_non_ascii_text_as_utf8_not_escapes() -> None:
    # SHA-256 of '["{\"name\":\"Zoë\"}",1893456000000,"clé"]' in UTF-8, escapes not applied
    assert (
        fingerprint('{"name": "Zo\\u00eb"}', NOW, "clé")
        == fingerprint('{"name": "Zoë"}', NOW, "clé")
        == "f875a2d457d71986de41154274ac3f6481679e22e064d6a8e24eadfcef2d4c9d"
    )
