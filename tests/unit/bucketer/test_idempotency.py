"""Idempotency keys of requests read from the requests topic (Kafka-native producers, ingest)."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.domain.idempotency import claim_of
from scheduler.domain.ids import derived_message_id
from scheduler.domain.status import Status
from scheduler.records import ScheduleRequest

from .harness import Harness

pytestmark = pytest.mark.unit

TTL = 3_600_000
DAY = 86_400_000


def keyed(
    h: Harness, key: str, payload: str = '{"n":1}', created: int | None = None
) -> ScheduleRequest:
    now = h.clock.now_ms()
    return dataclasses.replace(
        h.request(now + DAY, message_id=derived_message_id("app-a", key), payload_json=payload),
        idempotency_key=key,
        created_ms=now if created is None else created,
    )


def test_another_body_under_a_claimed_key_is_rejected() -> None:
    h = Harness()
    first, other = keyed(h, "k1"), keyed(h, "k1", payload='{"n":2}')
    h.process(h.record(first), h.record(other))
    [rejection] = h.rejected()
    assert (rejection.reason, rejection.message_id) == ("idempotency_conflict", first.message_id)
    view = h.messages.get("app-a", first.message_id)
    assert view is not None and view.content.payload_json == '{"n":1}'
    [stored] = h.stored()
    assert stored.payload_json == '{"n":1}'
    # in a later batch too
    h.process(h.record(dataclasses.replace(other, created_ms=other.created_ms + 5)))
    assert [r.reason for r in h.rejected()] == ["idempotency_conflict"] * 2


def test_a_key_claimed_in_ingest_lets_ingests_request_through_and_refuses_another() -> None:
    h = Harness()
    from_ingest = dataclasses.replace(keyed(h, "k2"), source="http")
    claim = claim_of(from_ingest)
    assert claim is not None
    [holder] = h.messages.claim_keys([claim], TTL)  # what ingest did before publishing
    assert holder.won
    producer = keyed(h, "k2", payload='{"n":3}', created=from_ingest.created_ms + 1)
    h.process(h.record(producer), h.record(from_ingest))
    assert [r.reason for r in h.rejected()] == ["idempotency_conflict"]
    view = h.messages.get("app-a", from_ingest.message_id)
    assert view is not None and view.content.payload_json == '{"n":1}'


def test_the_same_request_again_is_a_harmless_duplicate() -> None:
    h = Harness()
    first = keyed(h, "k3")
    h.process(h.record(first))
    h.clock.advance(1_000)
    again = dataclasses.replace(first, created_ms=h.clock.now_ms())  # a producer's retry
    h.process(h.record(again), h.record(first))  # and a replay of the first
    assert h.rejected() == []
    view = h.messages.get("app-a", first.message_id)
    assert view is not None and view.content.created_ms == first.created_ms
    assert view.state.status is Status.READY
    assert len(h.stored()) == 1
    assert h.metric("scheduler_bucketer_key_duplicates_total", outcome="skipped") == 1


def test_a_copy_of_a_claimed_unrecorded_request_is_written_as_the_holders() -> None:
    """The holder claimed and never published (it died): the copy is the message, with the
    holder's created_ms, so the holder's request arriving after all writes the same cells."""
    h = Harness()
    holder = keyed(h, "k4", created=h.clock.now_ms() - 5_000)
    claim = claim_of(holder)
    assert claim is not None
    h.messages.claim_keys([claim], TTL)
    copy = dataclasses.replace(holder, created_ms=h.clock.now_ms())
    h.process(h.record(copy))
    view = h.messages.get("app-a", holder.message_id)
    assert view is not None and view.content.created_ms == holder.created_ms
    assert h.metric("scheduler_bucketer_key_duplicates_total", outcome="processed") == 1
    h.process(h.record(holder))
    assert h.rejected() == [] and len(h.stored()) == 1


def test_requests_without_a_key_are_not_claimed() -> None:
    h = Harness()
    now = h.clock.now_ms()
    h.process(h.record(h.request(now + DAY)), h.record(h.request(now + DAY)))
    assert h.rejected() == [] and len(h.stored()) == 2
    assert h.messages._claims == {}
