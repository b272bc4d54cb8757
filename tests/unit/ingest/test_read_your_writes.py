"""Read-your-writes under the interleavings that threaten it (fakes, hooks between steps).

A 200 to POST /messages means the record READY is written before the answer, so the client's next
GET finds it. The dangerous cases are a second request for the same idempotency key answered
while the first is between its publish and its record write, and a record write that fails after
Kafka acknowledged the request."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from scheduler.domain.status import Status

from .harness import Harness

pytestmark = pytest.mark.unit

SOON = "2026-01-01T00:05:00Z"
BODY = {"payload": {"n": 1}, "sendAt": SOON, "idempotencyKey": "order-7"}


def test_a_second_request_for_a_key_whose_first_is_not_recorded_yet_reads_its_message(
    h: Harness,
) -> None:
    """The first request has published and waits before its record write; the second one, same
    key and body, is answered 200 and its client reads the message at once."""
    save = h.messages.save
    first_writing, let_first_write = threading.Event(), threading.Event()
    calls = 0

    def held_first_save(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_writing.set()
            assert let_first_write.wait(10), "the test never released the first write"
        return save(*args, **kwargs)

    h.messages.save = held_first_save  # type: ignore[method-assign]
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(h.schedule(BODY)))
    first.start()
    try:
        assert first_writing.wait(10), "the first request never reached its record write"
        second = h.schedule(BODY)
        assert second.status_code == 200, second.text
        message_id = second.json()["messageId"]
        read = h.client.get(f"/messages/{message_id}", headers=h.alice.data)
        assert read.status_code == 200, read.text
        assert (read.json()["status"], read.json()["payload"]) == ("READY", {"n": 1})
    finally:
        let_first_write.set()
        first.join(10)
    assert not first.is_alive()
    [first_answer] = answers
    assert first_answer.status_code == 200
    assert first_answer.json()["messageId"] == message_id
    # both published the same request (same id, same created_ms): one message downstream
    assert {(r.message_id, r.created_ms) for r in h.published_requests()} == {
        (message_id, h.published_requests()[0].created_ms)
    }


def test_after_a_record_write_failed_the_same_key_again_makes_the_message_readable(
    h: Harness,
) -> None:
    """A record write that fails after Kafka's ack still answers 200 (Kafka has the message; the
    bucketer records it): until then a GET does not find it. Retrying with the same key is the
    client's way to read its write at once: the retry records it."""
    save = h.messages.save

    def down(*_: object) -> None:
        raise RuntimeError("cassandra down")

    h.messages.save = down  # type: ignore[method-assign]
    r = h.schedule(BODY)
    assert r.status_code == 200, r.text
    message_id = r.json()["messageId"]
    assert h.client.get(f"/messages/{message_id}", headers=h.alice.data).status_code == 404

    h.messages.save = save  # type: ignore[method-assign]
    again = h.schedule(BODY)
    assert (again.status_code, again.json()["messageId"]) == (200, message_id)
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None and view.state.status is Status.READY
    read = h.client.get(f"/messages/{message_id}", headers=h.alice.data)
    assert (read.status_code, read.json()["payload"]) == (200, {"n": 1})
