"""Past the dedup window only the message record tells a settled duplicate apart; the record
writer may lag. A late attempt fires only once the records hold every result committed before
its firing began (records_progress.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler_releaser.dispatcher.records_progress import RecordsProgress
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.settings import DispatchSettings

from .harness import build

pytestmark = pytest.mark.unit
NEVER = -(2**62)


def test_the_records_cover_an_instant_once_every_partition_is_written_up_to_its_end_then() -> None:
    progress = RecordsProgress()
    progress.observe(1_000, {0: 10, 1: 4}, committed={0: 10, 1: 3})
    assert progress.covers_ms == NEVER  # partition 1 is one result short
    progress.observe(2_000, {0: 12, 1: 4}, committed={0: 11, 1: 4})
    assert progress.covers_ms == 1_000  # the question of 1 000 is answered, not that of 2 000
    progress.observe(3_000, {0: 12, 1: 4}, committed={0: 12, 1: 4})
    assert progress.covers_ms == 3_000
    assert progress.lag_ms(3_500) == 500


def test_a_partition_never_committed_is_not_written_and_one_without_records_is() -> None:
    progress = RecordsProgress()
    progress.observe(1_000, {0: 5}, committed={})
    assert progress.covers_ms == NEVER
    progress.observe(2_000, {}, committed={})  # nothing retained anywhere: nothing to write
    assert progress.covers_ms == NEVER  # the question of 1 000 still waits
    progress.observe(3_000, {0: 5}, committed={0: 5})
    assert progress.covers_ms == 3_000


WINDOW = 300_000


def test_a_late_duplicate_of_a_settled_attempt_waits_for_the_records_not_delivered_again() -> None:
    posts: list[int] = []
    h = build(
        lambda request: posts.append(1) or httpx.Response(200),
        settings=DispatchSettings(dedup_window_ms=WINDOW, prefetch_ms=0, max_attempts=3),
    )
    # Delivered long ago; the dedup window has forgotten it and the record writer is behind:
    # the record still says QUEUED.
    m = h.message(due_in_ms=-(WINDOW + 60_000))
    h.store_record(m, Status.QUEUED)
    h.records.behind = True

    def writer_catches_up() -> None:
        h.messages.update_status(
            m.app_id,
            m.message_id,
            StatusUpdate(Status.SENT, 0, 1, m.due_ms, h.clock.now_ms()),
            LogEntry(h.clock.now_ms(), "0:1:sent", Status.SENT),
        )
        h.records.caught_up_at = h.clock.now_ms()

    sleeps = 0

    def on_sleep() -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 20:  # a second of waiting: the writer writes the earlier result
            writer_catches_up()

    h.dispatcher._sleep.on_sleep = on_sleep  # type: ignore[attr-defined]
    h.dispatcher.accept(m, None)
    asyncio.run(h.dispatcher.fire_due())
    assert posts == []  # without the wait: POSTed a second time (the record said QUEUED)
    assert sleeps >= 20
    [result] = h.sink.results()
    assert result.error == "done"


def test_an_attempt_within_the_window_does_not_wait_for_the_records() -> None:
    posts: list[int] = []
    h = build(
        lambda request: posts.append(1) or httpx.Response(200),
        settings=DispatchSettings(dedup_window_ms=WINDOW, prefetch_ms=0, max_attempts=3),
    )
    h.records.behind = True  # never catches up
    m = h.message(due_in_ms=-1_000)
    h.dispatcher.accept(m, None)
    asyncio.run(h.dispatcher.fire_due())
    assert posts == [1]


def test_a_second_copy_of_an_attempt_waiting_for_the_records_is_refused_after_a_prune() -> None:
    # Found by trying the restore runbook: after a restore, the ring held two copies of messages
    # due 15 minutes earlier (one released before the disaster, one after the watermark was
    # rewound). The first copy was popped and waited for the record writers; the periodic prune
    # forgot its key (due long ago, no longer in the heap), the second copy passed the dedup and
    # both were delivered: 13 duplicates to a KAFKA destination.
    posts: list[int] = []
    h = build(
        lambda request: posts.append(1) or httpx.Response(200),
        settings=DispatchSettings(dedup_window_ms=WINDOW, prefetch_ms=0, max_attempts=3),
    )
    m = h.message(due_in_ms=-(3 * WINDOW))
    h.store_record(m, Status.QUEUED)  # not delivered before: its record is right to say so
    h.records.behind = True
    waits = 0

    def meanwhile() -> None:
        nonlocal waits
        waits += 1
        if waits == 2:  # the first copy waits for the records: the runtime prunes, a copy comes
            h.dispatcher.timers.prune(h.clock.now_ms() - WINDOW)
            h.dispatcher.accept(m, Position("scheduler.due.07", 0, 42))
        if waits == 20:
            h.records.behind = False

    h.dispatcher._sleep.on_sleep = meanwhile  # type: ignore[attr-defined]
    h.dispatcher.accept(m, Position("scheduler.due.07", 0, 7))

    async def run() -> None:
        await h.dispatcher.fire_due()
        await h.dispatcher.fire_due()  # whatever the copy left in the timers

    asyncio.run(run())
    assert posts == [1]
    assert h.metric("scheduler_dispatch_duplicates_total") == 1
