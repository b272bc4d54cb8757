"""The dispatcher's side of a reschedule: a copy of the old generation already in the ring never
fires at the old time, the new generation fires at the new one. Ingest leaves two pieces of
evidence, and either alone stops the old copy (verdict.fire_check): the ABORT command of the old
generation in the commands view (read before the old due - guard, or the abort is not answered
200), and the record at the next generation (fire_check: a later generation on the record is
STALE). The dispatcher code is untouched by reschedule; this pins what it relies on."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler_releaser.dispatcher.timers import Position

from .harness import REST_APP, build

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("evidence", ["command and record", "record only", "command only"])
def test_the_old_copy_is_skipped_and_the_new_generation_fires_at_the_new_time(
    evidence: str,
) -> None:
    calls: list[tuple[int, httpx.Request]] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        calls.append((h.clock.now_ms(), request))
        return httpx.Response(200)

    h = build(receiver)
    old = h.message(due_in_ms=1_000)  # generation 0, already QUEUED in the ring
    h.store_record(old, Status.QUEUED)
    new = h.message(due_in_ms=5_000, generation=1)
    if evidence != "record only":
        h.abort_now(old)  # the reschedule's ABORT of generation 0
    if evidence != "command only":
        now = h.clock.now_ms()
        ready = StatusUpdate(Status.READY, 1, 1, new.due_ms, now)
        h.messages.update_status(
            REST_APP.app_id, old.message_id, ready, LogEntry(now, "1:rescheduled", Status.READY)
        )
    h.dispatcher.accept(old, Position("t", 0, 1))
    h.dispatcher.accept(new, Position("t", 0, 2))

    h.clock.advance(1_000)
    asyncio.run(h.dispatcher.fire_due())
    assert calls == []
    [skipped] = h.sink.results()
    reason = "stale" if evidence == "record only" else "aborted"
    assert (skipped.generation, skipped.outcome, skipped.error) == (
        0,
        DeliveryOutcome.SKIPPED,
        reason,
    )

    h.clock.advance(4_000)
    asyncio.run(h.dispatcher.fire_due())
    assert [at for at, _ in calls] == [new.due_ms]
    sent = h.sink.results()[-1]
    assert (sent.generation, sent.attempt, sent.outcome) == (1, 1, DeliveryOutcome.SENT)
