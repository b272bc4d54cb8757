"""The operator correction of the pending counter from the message records (fakes)."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from scheduler.store.usage import InMemoryUsageStore, UsageKind
from scheduler.testing.fakes import InMemoryMessageStore
from scheduler_ingest.recount import recount_pending

pytestmark = pytest.mark.unit

STATUSES = [Status.READY, Status.QUEUED, Status.SENT, Status.FAILED, Status.ABORTED]


def seeded() -> tuple[InMemoryMessageStore, InMemoryUsageStore]:
    messages = InMemoryMessageStore()
    for i in range(12):
        status = STATUSES[i % len(STATUSES)]
        content = MessageContent(
            app_id="a",
            message_id=f"m{i:02d}",
            payload_json="1",
            send_at_ms=10_000,
            created_ms=1_000 + i,
        )
        state = StatusUpdate(status, 0, 1, 10_000, 1_000 + i)
        messages.save(content, state, LogEntry(1_000 + i, "0:1:x", status))
    usage = InMemoryUsageStore()
    usage.add("a", 0, UsageKind.INGESTED, 12)
    usage.add("a", 0, UsageKind.SENT, 5)  # drifted: 12 - 5 = 7, but 6 are READY or QUEUED
    return messages, usage


def test_the_counter_is_corrected_to_the_non_terminal_records_across_pages() -> None:
    messages, usage = seeded()
    r = recount_pending(messages, usage, "a", page_size=5)
    assert (r.counted, r.pending, r.correction) == (7, 6, -1)
    assert usage.pending("a") == 6
    again = recount_pending(messages, usage, "a", page_size=5)
    assert again.correction == 0 and usage.pending("a") == 6


def test_a_dry_run_changes_nothing_and_other_apps_are_untouched() -> None:
    messages, usage = seeded()
    usage.add_pending("b", 4)
    r = recount_pending(messages, usage, "a", dry_run=True)
    assert r.correction == -1
    assert (usage.pending("a"), usage.pending("b")) == (7, 4)
