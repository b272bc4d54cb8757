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

from .harness import TOPICS, Harness, build

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


def started(h: Harness, settled_ago_ms: int = 60_000, aborts_ago_ms: int = 60_000) -> None:
    """As the runtime after its startup: the results reloaded and the commands view read from
    these instants on."""
    now = h.clock.now_ms()
    h.dispatcher.know_since(now - settled_ago_ms, now - aborts_ago_ms)


def fire(h: Harness, *messages: DueMessage) -> None:
    for m in messages:
        h.dispatcher.accept(m, Position("scheduler.due.00", 0, 1))
    h.clock.set(max(h.clock.now_ms(), *(m.due_ms for m in messages)))
    asyncio.run(h.dispatcher.fire_due())


def test_an_attempt_due_since_the_reload_fires_without_reading_its_record() -> None:
    h, posts = posting()
    started(h)
    m = h.message(due_in_ms=1_000)
    h.store_record(m, Status.QUEUED)
    fire(h, m)
    assert posts == [1]
    assert (checks(h, "read"), checks(h, "known")) == (0, 1)


def test_a_second_copy_of_a_known_attempt_is_refused_at_intake() -> None:
    h, posts = posting()
    started(h)
    m = h.message(due_in_ms=1_000)
    fire(h, m)
    fire(h, m)  # a bucket released again, or a direct send beside a release
    assert posts == [1]
    assert h.metric("scheduler_dispatch_duplicates_total") == 1


def test_a_known_attempt_is_still_skipped_by_an_acknowledged_abort() -> None:
    h, posts = posting()
    started(h)
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
    started(h, settled_ago_ms=0)
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
    started(h, settled_ago_ms=10 * WINDOW)
    m = h.message(due_in_ms=-(WINDOW + 1_000))
    h.store_record(m, Status.SENT)
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1


def test_without_a_reload_every_attempt_reads_its_record() -> None:
    h, posts = posting()  # know_since never called: a core not started by the runtime
    m = h.message(due_in_ms=1_000)
    h.store_record(m, Status.SENT)
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1


def test_once_the_ring_is_repartitioned_every_attempt_reads_its_record_until_a_restart() -> None:
    # A copy may now land on a partition another instance owns, whose settlements this queue
    # never sees; only the record can tell.
    h, posts = posting()
    started(h)
    h.dispatcher.ring_repartitioned()
    started(h)  # ignored from now on
    m = h.message(due_in_ms=1_000)
    h.store_record(m, Status.SENT)  # settled by the instance that owned its first partition
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1


def test_an_abort_older_than_the_commands_view_is_still_honoured_through_the_record() -> None:
    # The view keeps aborts for two ring cycles. A message created long before (due days after
    # it was scheduled) whose abort missed its stored row (an ABORT read before its request, or
    # a shard count changed since) is stopped only by its ABORTED record: it must be read.
    h, posts = posting()
    started(h)
    cycle = TOPICS.ring.cycle_ms
    m = h.message(due_in_ms=1_000, created_ms=h.clock.now_ms() - 3 * cycle)
    h.store_record(m, Status.ABORTED)  # the abort, issued more than two cycles ago
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1
    [result] = h.sink.results()
    assert result.error == "aborted"


def test_a_message_created_before_the_commands_view_started_reading_reads_its_record() -> None:
    # A restart reads the commands from one ring cycle back: an abort issued before that is
    # not in the view, whatever the results reload covers.
    h, posts = posting()
    started(h, settled_ago_ms=60_000, aborts_ago_ms=5_000)
    m = h.message(due_in_ms=1_000, created_ms=h.clock.now_ms() - 10_000)
    h.store_record(m, Status.ABORTED)
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1


def test_a_created_instant_in_the_future_is_not_trusted() -> None:
    # A Kafka-native producer sets created_ms with its own clock.
    h, posts = posting()
    started(h)
    m = h.message(due_in_ms=1_000, created_ms=h.clock.now_ms() + 3_600_000)
    h.store_record(m, Status.SENT)
    fire(h, m)
    assert posts == []
    assert checks(h, "read") == 1
