"""`GET /messages/{id}/logs` renders each entry's data in the API's vocabulary: camelCase,
instants as RFC 3339, durations as `...Ms`, no internal names (a ring topic becomes its
due-minute queue, a bucket its start, the shard is dropped). The entries come from the writers
themselves (bucketer, record writer) or as the others write them; rendering happens on read, so
entries stored by earlier versions render alike."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.domain.buckets import bucket_start
from scheduler.domain.sendat import format_rfc3339_ms as rfc
from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from scheduler.store.usage import InMemoryUsageStore
from scheduler.testing.fakes import InMemoryMessageStore
from scheduler_ingest.log_view import render_log_data
from scheduler_ingest.messages import log_json
from scheduler_releaser.dispatcher.record_writer import RecordWriter
from tests.unit.bucketer.harness import SCHEDULING as BUCKETER_SCHEDULING
from tests.unit.bucketer.harness import TEN_YEARS_MS
from tests.unit.bucketer.harness import Harness as Bucketer

from .harness import T0, Harness

pytestmark = pytest.mark.unit


def _rendered(messages: InMemoryMessageStore, app_id: str, message_id: str) -> list[dict]:
    return [log_json(e)["data"] for e in messages.logs(app_id, message_id)]


def test_bucketer_entries_name_the_due_minute_and_the_bucket_not_topics_and_shards() -> None:
    b = Bucketer()
    now = b.clock.now_ms()
    near = b.request(send_at_ms=now + 2_500)
    far = b.request(send_at_ms=now + TEN_YEARS_MS + 123)
    b.process(b.record(near), b.record(far))
    [(topic, _)] = b.direct()
    slot = b.topics.ring.slot_of_topic(topic)
    [queued] = b.messages.logs("app-a", near.message_id)
    assert queued.data == {"due_ms": now + 2_500, "topic": topic}  # as stored
    assert _rendered(b.messages, "app-a", near.message_id) == [
        {"dueAt": rfc(now + 2_500), "queue": f"due-minute {slot}"}
    ]
    [stored] = b.messages.logs("app-a", far.message_id)
    assert set(stored.data) == {"due_ms", "bucket_ms", "shard"}  # as stored
    bucket = bucket_start(now + TEN_YEARS_MS + 123, BUCKETER_SCHEDULING.bucket_width_ms)
    assert _rendered(b.messages, "app-a", far.message_id) == [
        {"dueAt": rfc(now + TEN_YEARS_MS + 123), "bucketStart": rfc(bucket)}
    ]


def test_a_message_released_meanwhile_says_so_in_camel_case() -> None:
    data = {"due_ms": T0, "topic": "scheduler.due.07", "released_meanwhile": True}
    assert render_log_data(data) == {
        "dueAt": rfc(T0),
        "queue": "due-minute 7",
        "releasedMeanwhile": True,
    }


def test_record_writer_entries_have_camel_case_keys_and_lateness_in_ms() -> None:
    messages = InMemoryMessageStore()
    messages.save(
        MessageContent(app_id="a", message_id="m", payload_json="1", send_at_ms=T0, created_ms=T0),
        StatusUpdate(Status.QUEUED, 0, 1, T0, T0),
        LogEntry(T0, "0:1:released", Status.QUEUED),
    )
    writer = RecordWriter(messages, InMemoryUsageStore())
    base = DeliveryResult(
        message_id="m",
        app_id="a",
        generation=0,
        attempt=1,
        outcome=DeliveryOutcome.RETRY,
        due_ms=T0,
        finished_ms=T0 + 40,
        lateness_ms=40,
        http_status=503,
        error="503 Service Unavailable",
    )
    writer.write(base)
    writer.write(
        replace(
            base,
            attempt=2,
            outcome=DeliveryOutcome.SENT,
            due_ms=T0 + 1_000,
            finished_ms=T0 + 1_012,
            lateness_ms=12,
            http_status=204,
            error=None,
        )
    )
    stored = [e.data for e in messages.logs("a", "m")]
    assert stored[-1] == {"attempt": 2, "outcome": "SENT", "http_status": 204, "lateness_ms": 12}
    assert _rendered(messages, "a", "m") == [
        {},  # released (the releaser writes no data)
        {"attempt": 1, "outcome": "RETRY", "httpStatus": 503, "error": "503 Service Unavailable"},
        {"attempt": 2, "outcome": "SENT", "httpStatus": 204, "latenessMs": 12},
    ]


def test_entries_already_in_the_api_vocabulary_are_unchanged() -> None:
    for data in (
        {"sendAt": "2030-01-01T11:00:00.000Z", "source": "http"},  # ingest: scheduled
        {"by": "api"},  # ingest: aborted
        {"generation": 1},  # ingest: redriven
        {"reason": "application deleted"},  # releaser / record writer: aborted
        {"attempt": 3, "outcome": "FAILED", "error": "timeout"},  # record writer: failed
        {},  # releaser: released
    ):
        assert render_log_data(data) == data


def test_unknown_keys_are_rendered_by_the_same_rules() -> None:
    # A key a later writer adds renders without a change here: _ms instants as RFC 3339,
    # known durations as ...Ms, any other snake_case in camelCase; a topic that is not the
    # ring's is internal and dropped; a non-integer _ms value is left as it is.
    data = {
        "retry_due_ms": T0,
        "dispatch_delay_ms": 7,
        "last_error_code": "x",
        "topic": "scheduler.results",
        "odd_ms": "n/a",
        "flag_ms": True,
    }
    assert render_log_data(data) == {
        "retryDueAt": rfc(T0),
        "dispatchDelayMs": 7,
        "lastErrorCode": "x",
        "oddAt": "n/a",
        "flagAt": True,
    }


def test_the_logs_route_renders_entries_stored_by_any_version(h: Harness) -> None:
    r = h.schedule({"payload": {"n": 1}, "sendAt": "2030-01-01T00:00:00Z"})
    message_id = r.raise_for_status().json()["messageId"]
    app_id = h.alice.app_id
    due = 1_893_456_000_000  # 2030-01-01T00:00:00Z
    queued = StatusUpdate(Status.QUEUED, 0, 1, due, T0 + 10)
    h.messages.update_status(
        app_id,
        message_id,
        queued,
        LogEntry(
            T0 + 10, "0:1:scheduled:queued", Status.QUEUED, {"due_ms": due, "topic": "unit.due.3"}
        ),
    )
    logs = h.client.get(f"/messages/{message_id}/logs", headers=h.alice.data).json()["logs"]
    assert logs == [
        {
            "timestamp": rfc(T0),
            "status": "READY",
            "data": {"sendAt": "2030-01-01T00:00:00.000Z", "source": "http"},
        },
        {
            "timestamp": rfc(T0 + 10),
            "status": "QUEUED",
            "data": {"dueAt": "2030-01-01T00:00:00.000Z", "queue": "due-minute 3"},
        },
    ]
