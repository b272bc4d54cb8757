"""The fire-time record read is skipped where the timer queue already knows every settlement
that could concern an attempt: due since the restart's reload began (less the produce-ahead and
the clock slack), and within the dedup window. Everywhere else the record is still read.

What the read no longer guards there is guarded by the timer queue (a copy of a settled attempt
is refused at intake) and by the commands view (an acknowledged abort), as these tests show."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.settings import DispatchSettings

from .harness import Harness, build

pytestmark = pytest.mark.unit

WINDOW = 300_000
SLACK = 10_000
SETTINGS = DispatchSettings(
    dedup_window_ms=WINDOW, results_slack_ms=SLACK, prefetch_ms=0, max_attempts=3
)


def posting() -> tuple[Harness, list[int]]:
    posts: list[int] = []
    h = build(lambda request: posts.append(1) or httpx.Response(200), settings=SETTINGS)
    return h, posts


def checks(h: Harness, source: str) -> float:
    return h.metric("scheduler_dispatch_record_checks_total", {"source": source})


def fire(h: Harness, *messages: DueMessage) -> None:
    for m in messages:
        h.dispatcher.accept(m, Position("scheduler.due.00", 0, 1))
    h.clock.set(max(h.clock.now_ms(), *(m.due_ms for m in messages)))
    asyncio.run(h.dispatcher.fire_due())


def test_an_attempt_due_since_the_reload_fires_without_reading_its_record() -> None:
    h, posts = posting()
    h.dispatcher.know_settled_since(h.clock.now_ms() - 60_000)
    m = h.message(due_in_ms=1_000)
    h.store_record(m, Status.QUEUED)
    fire(h, m)
    assert posts == [1]
    assert (checks(h, "read"), checks(h, "known")) == (0, 1)


def test_a_second_copy_of_a_known_attempt_is_refused_at_intake() -> None:
    h, posts = posting()
    h.dispatcher.know_settled_since(h.clock.now_ms() - 60_000)
    m = h.message(due_in_ms=1_000)
    fire(h, m)
    fire(h, m)  # a bucket released again, or a direct send beside a release
    assert posts == [1]
    assert h.metric("scheduler_dispatch_duplicates_total") == 1


def test_a_known_attempt_is_still_skipped_by_an_acknowledged_abort() -> None:
    h, posts = posting()
    h.dispatcher.know_settled_since(h.clock.now_ms() - 60_000)
    m = h.message(due_in_ms=1_000)
    h.abort_now(m)
    fire(h, m)
    assert posts == []
    [result] = h.sink.results()
    assert result.error == "aborted"


def test_a_copy_due_before_the_reload_began_reads_its_record_and_is_not_delivered_again() -> None:
    # The restart's reload began at `since`: a copy due just before it (within the clock slack)
    # may have been settled by the previous incarnation before `since`, so the queue does not
    # know it. Vouching for it would POST the message a second time (the record says SENT).
    h, posts = posting()
    since = h.clock.now_ms()
    h.dispatcher.know_settled_since(since)
    m = h.message(due_in_ms=SLACK - 1)  # results of its first copy could predate `since`
    h.store_record(m, Status.SENT)
    fire(h, m)
    assert posts == []
    assert (checks(h, "read"), checks(h, "known")) == (1, 0)
    [result] = h.sink.results()
    assert result.error == "done"


def test_past_the_dedup_window_the_record_is_read_however_long_ago_the_reload_began() -> None:
    # The queue forgets settled attempts due more than the window ago (its periodic prune).
    h, posts = posting()
    h.dispatcher.know_settled_since(h.clock.now_ms() - 10 * WINDOW)
    m = h.message(due_in_ms=-(WINDOW + 1_000))
    h.store_record(m, Status.SENT)
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1


def test_without_a_reload_every_attempt_reads_its_record() -> None:
    h, posts = posting()  # know_settled_since never called: a core not started by the runtime
    m = h.message(due_in_ms=1_000)
    h.store_record(m, Status.SENT)
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1


def test_once_the_ring_is_repartitioned_every_attempt_reads_its_record_until_a_restart() -> None:
    # A copy may now land on a partition another instance owns, whose settlements this queue
    # never sees; only the record can tell.
    h, posts = posting()
    h.dispatcher.know_settled_since(h.clock.now_ms() - 60_000)
    h.dispatcher.ring_repartitioned()
    h.dispatcher.know_settled_since(h.clock.now_ms() - 60_000)  # ignored from now on
    m = h.message(due_in_ms=1_000)
    h.store_record(m, Status.SENT)  # settled by the instance that owned its first partition
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1
