"""POST /messages (and /message, /messages/batch): validation, normalisation, publish-then-write."""

from __future__ import annotations

import pytest

from scheduler.codec import RecordCodec, registry_client
from scheduler.domain.ids import derived_message_id, is_message_id
from scheduler.domain.status import Status
from scheduler.records import ScheduleRequest
from scheduler.store.usage import UsageDay, UsageKind, usage_day
from scheduler_ingest.publisher import PublishError
from scheduler_ingest.settings import IngestSettings

from .harness import T0, Harness

pytestmark = pytest.mark.unit

SOON = "2026-01-01T00:05:00Z"


def test_schedule_publishes_then_records_ready(h: Harness) -> None:
    r = h.schedule({"payload": {"hello": "world"}, "sendAt": SOON})
    assert r.status_code == 200, r.text
    body = r.json()
    message_id = body["scheduledMessageId"]
    assert is_message_id(message_id) and body["messageId"] == message_id
    assert body["sendAt"] == "2026-01-01T00:05:00.000Z" and body["status"] == "READY"

    [record] = h.published()
    assert record.topic == h.topics.requests and record.key == h.alice.app_id.encode()
    [request] = h.published_requests()
    assert request.message_id == message_id and request.app_id == h.alice.app_id
    assert request.payload_json == '{"hello":"world"}'
    assert request.send_at_ms == T0 + 300_000 and request.created_ms == T0
    assert request.source == "http" and request.idempotency_key is None

    got = h.client.get(f"/messages/{message_id}", headers=h.alice.data)
    assert got.status_code == 200
    view = got.json()
    assert view["status"] == "READY" and view["payload"] == {"hello": "world"}
    assert view["appId"] == h.alice.app_id and view["sendAt"] == "2026-01-01T00:05:00.000Z"
    logs = h.client.get(f"/messages/{message_id}/logs", headers=h.alice.data).json()["logs"]
    assert [(e["status"], e["timestamp"]) for e in logs] == [("READY", "2026-01-01T00:00:00.000Z")]
    assert h.usage.read(h.alice.app_id, 0, 10**6) == [UsageDay(usage_day(T0), ingested=1)]


def test_alias_route(h: Harness) -> None:
    r = h.client.post("/message", json={"payload": 1, "sendAt": SOON}, headers=h.alice.data)
    assert r.status_code == 200
    assert len(h.published_requests()) == 1


@pytest.mark.parametrize("payload", [0, "", False, [], {}, 0.5, "text", [None]])
def test_falsy_and_scalar_payloads_are_accepted_verbatim(h: Harness, payload: object) -> None:
    r = h.schedule({"payload": payload, "sendAt": SOON})
    assert r.status_code == 200, r.text
    got = h.client.get(f"/messages/{r.json()['messageId']}", headers=h.alice.data).json()
    assert got["payload"] == payload and type(got["payload"]) is type(payload)


@pytest.mark.parametrize(
    ("send_at", "expected"),
    [
        ("2026-01-01T05:30:00+05:30", "2026-01-01T00:00:00.000Z"),
        ("2025-12-31T19:00:00-05:00", "2026-01-01T00:00:00.000Z"),
        ("2026-01-01T00:00:00.0001Z", "2026-01-01T00:00:00.001Z"),  # rounded up, never early
        (T0 + 1_234, "2026-01-01T00:00:01.234Z"),
        ("2025-12-31T23:00:00Z", "2025-12-31T23:00:00.000Z"),  # past within 24 h: deliver now
    ],
)
def test_send_at_is_normalised_to_utc(h: Harness, send_at: object, expected: str) -> None:
    r = h.schedule({"payload": "x", "sendAt": send_at})
    assert r.status_code == 200, r.text
    assert r.json()["sendAt"] == expected
    [request] = h.published_requests()
    got = h.client.get(f"/messages/{request.message_id}", headers=h.alice.data).json()
    assert got["sendAt"] == expected


def _assert_nothing_written(h: Harness) -> None:
    assert h.published() == []
    assert h.messages.list(h.alice.app_id, None, None, 10).items == []
    assert h.usage.read(h.alice.app_id, 0, 10**6) == []


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"sendAt": SOON}, 400, "missing_payload"),
        ({"payload": None, "sendAt": SOON}, 400, "missing_payload"),
        ({"payload": 1}, 400, "missing_sendAt"),
        ({"payload": 1, "sendAt": None}, 400, "missing_sendAt"),
        ({"payload": 1, "sendAt": ""}, 400, "missing_sendAt"),
        ({"payload": 1, "sendAt": "tomorrow"}, 400, "invalid_sendAt"),
        ({"payload": 1, "sendAt": "2026-01-01T10:00:00"}, 400, "invalid_sendAt"),  # no offset
        ({"payload": 1, "sendAt": "2026-02-30T10:00:00Z"}, 400, "invalid_sendAt"),
        ({"payload": 1, "sendAt": 1_767_225_600}, 400, "invalid_sendAt"),  # seconds
        ({"payload": 1, "sendAt": 1.5e12 + 0.5}, 400, "invalid_sendAt"),
        ({"payload": 1, "sendAt": True}, 400, "invalid_sendAt"),
        ({"payload": 1, "sendAt": "2025-12-30T00:00:00Z"}, 400, "invalid_sendAt"),  # too old
        ({"payload": 1, "sendAt": "9999-01-01T00:00:00Z"}, 400, "invalid_sendAt"),  # too far
        ({"payload": 1, "sendAt": SOON, "status": "SENT"}, 400, "unknown_field"),
        ({"payload": 1, "sendAt": SOON, "appId": "app-bob"}, 400, "unknown_field"),
        ({"payload": 1, "sendAt": SOON, "idempotencyKey": 5}, 400, "invalid_idempotencyKey"),
        ({"payload": 1, "sendAt": SOON, "idempotencyKey": ""}, 400, "invalid_idempotency_key"),
        ([{"payload": 1, "sendAt": SOON}], 400, "invalid_request"),
        ("just a string", 400, "invalid_request"),
        ({"payload": "x" * 300_000, "sendAt": SOON}, 413, "payload_too_large"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    h: Harness, body: object, status: int, error: str
) -> None:
    r = h.schedule(body)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.json()["message"]
    _assert_nothing_written(h)


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "error"),
    [
        (b'{"payload": 1, "sendAt": ', "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (
            b'{"payload": NaN, "sendAt": "2026-01-01T00:05:00Z"}',
            "application/json",
            400,
            "invalid_json",
        ),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (
            b'{"payload": 1, "sendAt": "2026-01-01T00:05:00Z"}',
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (b'{"payload": 1, "sendAt": "2026-01-01T00:05:00Z"}', "", 415, "unsupported_media_type"),
        (b"payload=1&sendAt=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    ],
)
def test_malformed_bodies(
    h: Harness, raw: bytes, content_type: str, status: int, error: str
) -> None:
    headers = {**h.alice.data, "Content-Type": content_type}
    r = h.client.post("/messages", content=raw, headers=headers)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    _assert_nothing_written(h)


def test_oversized_body_is_refused_before_parsing() -> None:
    h = Harness(settings=IngestSettings(max_body_bytes=2048))
    try:
        r = h.schedule({"payload": "x" * 4096, "sendAt": SOON})
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
        _assert_nothing_written(h)
    finally:
        h.close()


def test_idempotency_key_gives_the_same_id_and_one_message(h: Harness) -> None:
    body = {"payload": {"n": 1}, "sendAt": SOON, "idempotencyKey": "order-42"}
    first = h.schedule(body)
    second = h.schedule(body)
    assert first.status_code == second.status_code == 200
    expected = derived_message_id(h.alice.app_id, "order-42")
    assert first.json()["messageId"] == second.json()["messageId"] == expected
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    assert len(h.published_requests()) == 1
    # the same key in another app is another message
    other = h.schedule(body, h.bob)
    assert other.json()["messageId"] == derived_message_id(h.bob.app_id, "order-42") != expected


def test_kafka_failure_is_a_503_and_nothing_is_written(h: Harness) -> None:
    h.fake.fail_with = PublishError("kafka_error", "broker down")
    r = h.schedule({"payload": 1, "sendAt": SOON})
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    assert r.headers["Retry-After"] == "1"
    _assert_nothing_written(h)
    metrics = h.metrics_text()
    assert (
        'scheduler_ingest_kafka_produce_failures_total{cause="kafka_error",topic="requests"} 1.0'
        in metrics
    )


def test_batch_has_per_item_results_in_order(h: Harness) -> None:
    r = h.client.post(
        "/messages/batch",
        json={
            "messages": [
                {"payload": 0, "sendAt": SOON},
                {"sendAt": SOON},
                {"payload": False, "sendAt": "2026-01-01T05:30:00+05:30"},
                {"payload": 1, "sendAt": "nope"},
                "not an object",
                {"payload": 2, "sendAt": SOON, "extra": 1},
                {"payload": 3, "sendAt": SOON, "idempotencyKey": "k"},
            ]
        },
        headers=h.alice.data,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x.get("error") for x in results] == [
        None,
        "missing_payload",
        None,
        "invalid_sendAt",
        "invalid_request",
        "unknown_field",
        None,
    ]
    assert (body["accepted"], body["rejected"]) == (3, 4)
    assert results[2]["sendAt"] == "2026-01-01T00:00:00.000Z"
    published = {p.message_id for p in h.published_requests()}
    assert published == {results[i]["messageId"] for i in (0, 2, 6)}
    for i in (0, 2, 6):
        assert h.messages.get(h.alice.app_id, results[i]["messageId"]) is not None
    assert h.usage.read(h.alice.app_id, 0, 10**6)[0].ingested == 3


def test_batch_limits_and_shape() -> None:
    h = Harness(settings=IngestSettings(batch_limit=3))
    try:
        items = [{"payload": i, "sendAt": SOON} for i in range(4)]
        r = h.client.post("/messages/batch", json={"messages": items}, headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (413, "batch_too_large")
        r = h.client.post("/messages/batch", json={"msgs": items}, headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
        r = h.client.post(
            "/messages/batch", json={"messages": items[:1], "x": 1}, headers=h.alice.data
        )
        assert (r.status_code, r.json()["error"]) == (400, "unknown_field")
        _assert_nothing_written(h)
    finally:
        h.close()


def test_batch_when_kafka_fails_is_a_503(h: Harness) -> None:
    h.fake.fail_with = PublishError("queue_full", "full")
    r = h.client.post(
        "/messages/batch", json={"messages": [{"payload": 1, "sendAt": SOON}]}, headers=h.alice.data
    )
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    _assert_nothing_written(h)


def test_batch_that_kafka_acknowledges_in_part_answers_200_with_503_items(h: Harness) -> None:
    # The broker refuses a record above the topic's max.message.bytes and acknowledges the
    # others (tests/integration/ingest/test_publisher_contract.py): per-item answers.
    h.fake.max_record_bytes[h.topics.requests] = 2_000
    r = h.client.post(
        "/messages/batch",
        json={
            "messages": [
                {"payload": 0, "sendAt": SOON},
                {"payload": "x" * 3_000, "sendAt": SOON},
                {"payload": 2, "sendAt": SOON},
            ]
        },
        headers=h.alice.data,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x.get("error") for x in results] == [None, "unavailable", None]
    assert (body["accepted"], body["rejected"]) == (2, 1)
    acknowledged = [results[0]["messageId"], results[2]["messageId"]]
    assert [p.message_id for p in h.published_requests()] == acknowledged
    listed = h.messages.list(h.alice.app_id, None, None, 10).items
    assert sorted(v.content.message_id for v in listed) == sorted(acknowledged)
    assert h.usage.read(h.alice.app_id, 0, 10**6)[0].ingested == 2


def test_record_write_failure_after_the_ack_still_answers_200(h: Harness) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("cassandra down")

    h.messages.save = broken  # type: ignore[method-assign]
    r = h.schedule({"payload": 1, "sendAt": SOON})
    assert r.status_code == 200  # Kafka has it: the bucketer writes the record
    assert len(h.published_requests()) == 1
    assert "scheduler_ingest_record_write_failures_total 1.0" in h.metrics_text()


def test_usage_counts_ingested(h: Harness) -> None:
    for _ in range(3):
        h.schedule({"payload": 1, "sendAt": SOON})
    [day] = h.usage.read(h.alice.app_id, 0, 10**6)
    assert (day.ingested, day.sent, day.failed) == (3, 0, 0)
    assert UsageKind.INGESTED.value == "ingested"
    assert Status.READY.value == "READY"


def test_confluent_wire_format_with_a_schema_registry() -> None:
    registry = registry_client("mock://ingest-unit")
    h = Harness(schema_registry=registry)
    try:
        assert h.schedule({"payload": 1, "sendAt": SOON}).status_code == 200
        [record] = h.published()
        assert record.value[0] == 0  # Confluent magic byte (single-object encoding is C3 01)
        decoded = RecordCodec(ScheduleRequest, registry=registry).decode(record.value)
        assert decoded.app_id == h.alice.app_id
    finally:
        h.close()


def test_a_repeated_idempotency_key_within_one_batch_makes_one_message(h: Harness) -> None:
    item = {"payload": 1, "sendAt": SOON, "idempotencyKey": "twice"}
    r = h.client.post(
        "/messages/batch",
        json={"messages": [item, item, {**item, "payload": 2}]},
        headers=h.alice.data,
    )
    first, second, third = r.json()["results"]
    assert first["messageId"] == second["messageId"]
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert third["error"] == "idempotency_conflict"  # the same key for another body
    assert len(h.published_requests()) == 1


@pytest.mark.parametrize(
    ("body", "error", "named"),
    [
        ({"idempotencyKey": ""}, "invalid_idempotency_key", "idempotencyKey must be 1 to 256"),
        ({"idempotencyKey": "k" * 257}, "invalid_idempotency_key", "idempotencyKey must be"),
        ({"idempotencyKey": 5}, "invalid_idempotencyKey", "idempotencyKey must be a string"),
        ({"kafkaKey": ""}, "invalid_kafka_key", "kafkaKey must be 1 to 256"),
        ({"kafkaKey": []}, "invalid_kafkaKey", "kafkaKey must be a string"),
    ],
)
def test_key_errors_name_the_json_field_the_client_sent(
    h: Harness, body: dict[str, object], error: str, named: str
) -> None:
    """Tokens are unchanged (clients match on them); the message names the JSON field."""
    for route in ("single", "batch"):
        item = {"payload": 1, "sendAt": SOON, **body}
        if route == "single":
            answer = h.schedule(item).json()
        else:
            r = h.client.post("/messages/batch", json={"messages": [item]}, headers=h.alice.data)
            answer = r.json()["results"][0]
        assert answer["error"] == error, answer
        assert named in answer["message"] and "_key" not in answer["message"], answer
    _assert_nothing_written(h)


@pytest.mark.parametrize("quoted", ["1767225900000", " 1767225900000 ", "1767225900000.0"])
def test_epoch_milliseconds_in_quotes_get_a_hint(h: Harness, quoted: str) -> None:
    r = h.schedule({"payload": 1, "sendAt": quoted})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_sendAt")
    message = r.json()["message"]
    assert "must be a JSON number" in message and "without quotes" in message, message
    # the same instant as a JSON number is accepted
    assert h.schedule({"payload": 1, "sendAt": 1_767_225_900_000}).status_code == 200
