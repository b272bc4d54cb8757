"""Delivery results -> message records, logs and usage, idempotently."""

from __future__ import annotations

import random

import pytest

from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from scheduler.store.usage import DAY_MS, InMemoryUsageStore, UsageDay, UsageKind, usage_day
from scheduler.testing.fakes import InMemoryMessageStore
from scheduler_releaser.dispatcher.record_writer import RecordWriter

pytestmark = pytest.mark.unit


def setup() -> tuple[InMemoryMessageStore, InMemoryUsageStore, RecordWriter]:
    messages = InMemoryMessageStore()
    messages.save(
        MessageContent(
            app_id="a", message_id="m", payload_json="1", send_at_ms=1_000, created_ms=0
        ),
        StatusUpdate(Status.QUEUED, 0, 1, 1_000, 0),
        LogEntry(0, "0:1:released", Status.QUEUED),
    )
    usage = InMemoryUsageStore()
    return messages, usage, RecordWriter(messages, usage)


def result(outcome: DeliveryOutcome, attempt: int = 1, **kw: object) -> DeliveryResult:
    fields: dict[str, object] = {
        "message_id": "m",
        "app_id": "a",
        "generation": 0,
        "attempt": attempt,
        "outcome": outcome,
        "due_ms": 1_000,
        "finished_ms": 1_000 + attempt * 10,
        "lateness_ms": attempt * 10,
    }
    fields.update(kw)
    return DeliveryResult(**fields)  # type: ignore[arg-type]


def test_retry_then_sent_ends_sent_with_lateness_and_logs_in_any_order() -> None:
    messages, usage, writer = setup()
    sent = result(DeliveryOutcome.SENT, attempt=2, http_status=200)
    retry = result(DeliveryOutcome.RETRY, attempt=1, http_status=503, error="http 503")
    writer.apply(sent)
    writer.apply(retry)  # late, replayed: must not move the record back
    writer.apply(sent)
    view = messages.get("a", "m")
    assert view is not None
    assert (view.state.status, view.state.attempt, view.state.lateness_ms) == (Status.SENT, 2, 20)
    ids = [e.entry_id for e in messages.logs("a", "m")]
    assert ids == ["0:1:released", "0:1:attempt", "0:2:sent"]
    sent_entry = messages.logs("a", "m")[-1]
    assert sent_entry.data["lateness_ms"] == 20 and sent_entry.data["http_status"] == 200
    [day] = usage.read("a", usage_day(0), usage_day(10_000))
    assert day.sent == 2  # approximate by design: a replayed result counts again


def test_failed_records_status_error_and_usage() -> None:
    messages, usage, writer = setup()
    writer.apply(result(DeliveryOutcome.FAILED, attempt=3, http_status=500, error="http 500: boom"))
    view = messages.get("a", "m")
    assert view is not None
    assert (view.state.status, view.state.http_status) == (Status.FAILED, 500)
    assert view.state.error == "http 500: boom"
    failed = [e for e in messages.logs("a", "m") if e.entry_id == "0:3:failed"]
    assert failed and failed[0].data["error"] == "http 500: boom"
    assert failed[0].data["http_status"] == 500 and failed[0].data["attempt"] == 3
    assert usage.read("a", 0, 1)[0].failed == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [("app_deleted", "application deleted"), ("app_missing", "application not found")],
)
def test_skipped_results_abort_only_when_the_app_is_gone(error: str, reason: str) -> None:
    # An app missing at fire time used to leave the record QUEUED for good.
    messages, _, writer = setup()
    writer.apply(result(DeliveryOutcome.SKIPPED, error="stale"))
    assert messages.get("a", "m").state.status is Status.QUEUED
    writer.apply(result(DeliveryOutcome.SKIPPED, error=error))
    assert messages.get("a", "m").state.status is Status.ABORTED
    [entry] = [e for e in messages.logs("a", "m") if e.entry_id.endswith(":aborted")]
    assert entry.data == {"reason": reason}


def test_a_skip_for_an_abort_ends_the_record_aborted_even_when_it_does_not_show_it() -> None:
    # Found by trying the restore runbook: a Cassandra snapshot restored to S loses the ABORTED
    # records that ingest wrote after S, while their abort commands stay in Kafka. The
    # dispatcher honours the commands and skips those messages, and the records stayed QUEUED
    # for good. The skip itself is the evidence that the generation ended undelivered.
    messages, _, writer = setup()
    writer.apply(result(DeliveryOutcome.SKIPPED, error="aborted"))
    assert messages.get("a", "m").state.status is Status.ABORTED
    [entry] = [e for e in messages.logs("a", "m") if e.entry_id.endswith(":aborted")]
    assert entry.data == {"reason": "abort command"}


def test_a_skip_for_an_abort_never_hides_a_delivery() -> None:
    messages, _, writer = setup()
    writer.apply(result(DeliveryOutcome.SENT, http_status=200))
    writer.apply(result(DeliveryOutcome.SKIPPED, attempt=2, error="aborted"))  # a stale copy
    assert messages.get("a", "m").state.status is Status.SENT


def test_sent_and_failed_lower_the_apps_pending_count() -> None:
    _, usage, writer = setup()
    usage.add("a", usage_day(0), UsageKind.INGESTED, 3)  # what ingest counted
    writer.apply(result(DeliveryOutcome.RETRY, attempt=1, http_status=503))
    assert usage.pending("a") == 3  # a retry is still pending
    writer.apply(result(DeliveryOutcome.SENT, attempt=2, http_status=200))
    assert usage.pending("a") == 2
    writer.apply(result(DeliveryOutcome.FAILED, message_id="m2", attempt=5, http_status=500))
    assert usage.pending("a") == 1


class CountingUsage(InMemoryUsageStore):
    """Notes every add (one counter write each in Cassandra)."""

    def __init__(self) -> None:
        super().__init__()
        self.adds: list[tuple[str, int, UsageKind, int]] = []

    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        self.adds.append((app_id, day, kind, n))
        super().add(app_id, day, kind, n)


def test_count_adds_usage_once_per_app_day_and_kind() -> None:
    messages = InMemoryMessageStore()
    usage = CountingUsage()
    writer = RecordWriter(messages, usage)
    day0, day1 = 1_000, DAY_MS + 1_000  # finished on two UTC days
    counts = {
        ("a", day0, DeliveryOutcome.SENT): 5,
        ("a", day1, DeliveryOutcome.SENT): 2,
        ("a", day0, DeliveryOutcome.FAILED): 3,
        ("b", day0, DeliveryOutcome.SENT): 4,
        ("b", day1, DeliveryOutcome.FAILED): 1,
        # never counted: neither SENT nor FAILED
        ("a", day0, DeliveryOutcome.RETRY): 6,
        ("b", day1, DeliveryOutcome.SKIPPED): 2,
    }
    results = [
        result(outcome, app_id=app, message_id=f"{app}-{day}-{outcome}-{i}", finished_ms=day)
        for (app, day, outcome), n in counts.items()
        for i in range(n)
    ]
    results.append(result(DeliveryOutcome.SKIPPED, app_id="c", error="app_deleted"))
    random.Random(7).shuffle(results)

    writer.count(results)

    assert sorted(usage.adds) == sorted(
        [
            ("a", usage_day(day0), UsageKind.SENT, 5),
            ("a", usage_day(day1), UsageKind.SENT, 2),
            ("a", usage_day(day0), UsageKind.FAILED, 3),
            ("b", usage_day(day0), UsageKind.SENT, 4),
            ("b", usage_day(day1), UsageKind.FAILED, 1),
        ]
    )
    assert usage.read("a", 0, 1) == [UsageDay(1, 0, 2, 0), UsageDay(0, 0, 5, 3)]
    assert usage.pending("a") == -10 and usage.pending("b") == -5 and usage.pending("c") == 0
    assert messages.get("a", results[0].message_id) is None  # counting writes no record
    writer.count([])
    writer.count(r for r in results if r.outcome is DeliveryOutcome.RETRY)  # any iterable
    assert len(usage.adds) == 5


def test_write_records_without_counting_and_apply_does_both() -> None:
    messages, _, _ = setup()
    usage = CountingUsage()
    writer = RecordWriter(messages, usage)
    sent = result(DeliveryOutcome.SENT, attempt=1, http_status=200)
    writer.write(sent)
    view = messages.get("a", "m")
    assert view is not None and view.state.status is Status.SENT
    assert usage.adds == []
    writer.apply(sent)
    assert usage.adds == [("a", usage_day(sent.finished_ms), UsageKind.SENT, 1)]
