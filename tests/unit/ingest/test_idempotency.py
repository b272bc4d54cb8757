"""Idempotency keys at ingest: one key, one message, one body (fakes, no I/O).

The claim itself (exactly one winner among concurrent claimers) is the storage contract
(tests/contract/test_idempotency_keys.py); the race across replicas and a Kafka-native producer
against the real stack is tests/integration/test_idempotency_race.py."""

from __future__ import annotations

import pytest

from scheduler.domain.idempotency import KeyClaim, fingerprint
from scheduler.domain.ids import derived_message_id
from scheduler.domain.status import Status
from scheduler_ingest.publisher import PublishError

from .harness import T0, Harness
from .test_pending_cap import capped

pytestmark = pytest.mark.unit

SOON = "2026-01-01T00:05:00Z"
SOON_MS = T0 + 300_000
BODY = {"payload": {"n": 1}, "sendAt": SOON, "idempotencyKey": "order-7"}


def test_a_different_body_under_a_used_key_is_a_409_and_changes_nothing(h: Harness) -> None:
    first = h.schedule(BODY)
    assert first.status_code == 200
    for change in ({"payload": {"n": 2}}, {"sendAt": "2026-01-01T00:06:00Z"}, {"kafkaKey": "k"}):
        r = h.schedule({**BODY, **change})
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "idempotency_conflict"
        assert first.json()["messageId"] in r.json()["message"]
    assert len(h.published_requests()) == 1
    view = h.messages.get(h.alice.app_id, first.json()["messageId"])
    assert view is not None and view.content.payload_json == '{"n":1}'
    assert 'scheduler_ingest_rejects_total{reason="idempotency_conflict"} 3.0' in (h.metrics_text())


def test_the_same_body_spelled_differently_is_the_same_request(h: Harness) -> None:
    first = h.schedule({**BODY, "payload": {"a": 1, "b": [1, 2]}})
    again = h.schedule({**BODY, "payload": {"b": [1, 2], "a": 1}, "sendAt": SOON_MS})
    assert again.status_code == 200, again.text
    assert (again.json()["messageId"], again.json()["duplicate"]) == (
        first.json()["messageId"],
        True,
    )


def claimed_before(h: Harness, payload_json: str, created_ms: int) -> KeyClaim:
    """A winner that claimed the key and died before publishing (nothing in Kafka, no record)."""
    claim = KeyClaim(
        app_id=h.alice.app_id,
        idempotency_key="order-7",
        message_id=derived_message_id(h.alice.app_id, "order-7"),
        fingerprint=fingerprint(payload_json, SOON_MS, None),
        created_ms=created_ms,
    )
    [holder] = h.messages.claim_keys([claim], 3_600_000)
    assert holder.won
    return claim


def test_a_retry_after_the_winner_died_unpublished_publishes_its_message(h: Harness) -> None:
    claim = claimed_before(h, '{"n":1}', T0 - 2_000)
    r = h.schedule(BODY)
    assert r.status_code == 200, r.text
    assert (r.json()["messageId"], r.json()["duplicate"]) == (claim.message_id, True)
    [request] = h.published_requests()  # the winner's request, byte for byte: its created_ms
    assert (request.message_id, request.created_ms) == (claim.message_id, T0 - 2_000)
    view = h.messages.get(h.alice.app_id, claim.message_id)
    assert view is not None and view.state.status is Status.READY
    # from now on the record answers, without publishing again
    r = h.schedule(BODY)
    assert (r.status_code, r.json()["duplicate"]) == (200, True)
    assert len(h.published_requests()) == 1


def test_a_claimed_key_refuses_another_body_even_before_it_is_recorded(h: Harness) -> None:
    claimed_before(h, '{"n":2}', T0 - 2_000)
    r = h.schedule(BODY)
    assert (r.status_code, r.json()["error"]) == (409, "idempotency_conflict")
    assert h.published_requests() == []


def test_a_failed_publish_keeps_the_claim_and_the_same_retry_succeeds(h: Harness) -> None:
    h.fake.fail_with = PublishError("kafka_error", "broker down")
    assert h.schedule(BODY).status_code == 503
    h.fake.fail_with = None
    # another body: the 503 may hide a write that did land, so the key stays bound to the first
    assert h.schedule({**BODY, "payload": 5}).status_code == 409
    r = h.schedule(BODY)
    assert (r.status_code, r.json()["duplicate"]) == (200, True)
    assert len(h.published_requests()) == 1


def test_a_claim_that_cassandra_does_not_answer_is_a_503_and_nothing_is_published(
    h: Harness,
) -> None:
    def down(*_: object) -> None:
        raise RuntimeError("cassandra down")

    h.messages.claim_keys = down  # type: ignore[method-assign]
    r = h.schedule(BODY)
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    assert r.headers["Retry-After"] == "1"
    batch = h.client.post("/messages/batch", json={"messages": [BODY]}, headers=h.alice.data)
    assert (batch.status_code, batch.json()["error"]) == (503, "unavailable")
    assert h.published_requests() == []
    # requests without a key do not need the claim
    assert h.schedule({"payload": 1, "sendAt": SOON}).status_code == 200


def test_batch_items_follow_the_same_rules(h: Harness) -> None:
    first = h.schedule(BODY).json()["messageId"]
    other = {**BODY, "idempotencyKey": "order-8"}
    r = h.client.post(
        "/messages/batch",
        json={"messages": [BODY, {**BODY, "payload": 9}, other, {"payload": 1, "sendAt": SOON}]},
        headers=h.alice.data,
    )
    assert r.status_code == 200, r.text
    same, changed, new, unkeyed = r.json()["results"]
    assert (same["messageId"], same["duplicate"], same["status"]) == (first, True, "READY")
    assert changed["error"] == "idempotency_conflict"
    assert new["duplicate"] is False and unkeyed["duplicate"] is False
    assert (r.json()["accepted"], r.json()["rejected"]) == (3, 1)
    assert len(h.published_requests()) == 3  # first, order-8, the unkeyed one


def test_at_the_cap_only_the_same_request_is_answered_from_its_record() -> None:
    h = capped(1)
    try:
        assert h.schedule(BODY).status_code == 200
        assert h.schedule(BODY).json()["duplicate"] is True
        r = h.schedule({**BODY, "payload": 3})
        assert (r.status_code, r.json()["error"]) == (429, "pending_limit_exceeded")
    finally:
        h.close()


def test_the_openapi_document_names_the_conflict(h: Harness) -> None:
    spec = h.client.get("/openapi.json").json()
    for path in ("/messages", "/message"):
        conflict = spec["paths"][path]["post"]["responses"]["409"]
        assert "idempotency_conflict" in conflict["description"]
