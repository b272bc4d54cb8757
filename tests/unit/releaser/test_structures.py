"""Timer queue, offset tracking, the commands view, pure verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.domain.backoff import Backoff
from scheduler.domain.status import Status
from scheduler.records import Command, CommandKind, DeliveryOutcome, DueMessage
from scheduler.store.ports import StatusUpdate
from scheduler_releaser.dispatcher.commands import CommandView
from scheduler_releaser.dispatcher.offsets import OffsetTracker
from scheduler_releaser.dispatcher.timers import TimerQueue
from scheduler_releaser.dispatcher.verdict import (
    AttemptKind,
    AttemptOutcome,
    Verdict,
    fire_check,
    jitter_draw,
    settle,
)

from .harness import REST_APP

pytestmark = pytest.mark.unit


def due(message_id: str, due_ms: int, generation: int = 0, attempt: int = 1) -> DueMessage:
    return DueMessage(
        message_id=message_id,
        app_id="a",
        generation=generation,
        attempt=attempt,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=0,
        payload_json="1",
    )


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 1_000)), max_size=60))
def test_timer_queue_pops_in_due_order_and_never_early(items: list[tuple[int, int]]) -> None:
    q = TimerQueue()
    for n, d in items:
        q.push(due(f"m{n}", d))
    popped: list[int] = []
    for now in range(0, 1_001, 97):
        batch = q.pop_due(now)
        assert all(h.due_ms <= now for h in batch)
        popped += [h.due_ms for h in batch]
    popped += [h.due_ms for h in q.pop_due(10_000)]
    assert popped == sorted(popped)
    assert len(popped) == len({n for n, _ in items})  # same id, gen, attempt: kept once


def test_timer_queue_prune_keeps_held_and_in_flight_keys_and_forget_lets_a_key_in_again() -> None:
    q = TimerQueue()
    q.push(due("a", 10))
    q.push(due("b", 5_000))
    [popped] = q.pop_due(10)
    assert q.prune(older_than_ms=1_000) == 0  # popped, not settled: in flight
    assert not q.push(due("a", 10))
    q.done(popped.message)
    assert q.prune(older_than_ms=1_000) == 1
    assert q.push(due("a", 10))  # forgotten after pruning
    assert not q.push(due("b", 5_000))  # still held
    q.forget(due("b", 5_000))
    assert q.push(due("b", 5_000))


def test_offsets_commit_only_the_settled_prefix() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12, 13):
        t.received("r", 0, offset, now_ms=offset)
    t.settled("r", 0, 12)
    t.settled("r", 0, 11)
    assert t.take_commits(now_ms=50) == {}
    assert t.oldest_unsettled_received_ms(default_ms=99) == 10
    t.settled("r", 0, 10)
    assert t.take_commits(now_ms=50) == {("r", 0): (13, 13)}  # metadata: oldest unsettled
    t.confirm({("r", 0): (13, 13)})
    assert t.take_commits(now_ms=50) == {}
    assert t.take_commits(now_ms=50, every=True) == {("r", 0): (13, 13)}  # the refresh
    t.settled("r", 0, 13)
    assert t.take_commits(now_ms=50) == {("r", 0): (14, 50)}  # nothing unsettled: now
    assert t.unsettled() == 0


def test_a_partition_commits_its_start_offset_before_anything_settles() -> None:
    """Otherwise a restart finds it uncommitted and reads it again from its first record."""
    t = OffsetTracker()
    t.start_at("r", 0, 40)
    assert t.take_commits(now_ms=7) == {("r", 0): (40, 7)}
    t.confirm({("r", 0): (40, 7)})
    t.received("r", 0, 40, now_ms=1)
    t.start_at("r", 0, 99)  # only before any record: never moves a live commit point
    assert t.take_commits(now_ms=7) == {}
    t.settled("r", 0, 40)
    assert t.take_commits(now_ms=7) == {("r", 0): (41, 7)}


def test_the_metadata_keeps_the_loaded_floor_until_the_partition_is_read_past_its_end() -> None:
    """A restart read results since 500 because an earlier incarnation may have settled records
    of this partition up to offset 20 (its end at start). Until the commit point passes 20 the
    metadata must keep saying 500: a second crash before that must load them again, or those
    records are delivered twice. (The previous release wrote the oldest unsettled receipt only,
    which after the first re-read settlements jumped to the restart time.)"""
    t = OffsetTracker()
    t.start_at("r", 0, 10, floor_ms=500, floor_until=20)
    for offset in range(10, 15):
        t.received("r", 0, offset, now_ms=9_000)
        t.settled("r", 0, offset)  # duplicates of settled attempts: settled at once
    assert t.take_commits(now_ms=9_500) == {("r", 0): (15, 500)}
    for offset in range(15, 21):
        t.received("r", 0, offset, now_ms=9_000)
        t.settled("r", 0, offset)
    assert t.take_commits(now_ms=9_500) == {("r", 0): (21, 9_500)}
    assert t.take_commits(now_ms=9_600, every=True) == {("r", 0): (21, 9_600)}


def test_command_view_counts_a_partition_fresh_only_once_read_to_an_end_asked_for() -> None:
    cmd = Command(message_id="m", app_id="a", kind=CommandKind.ABORT, generation=2, issued_ms=7)
    v = CommandView(now_ms=0, partitions=[0, 1])
    v.starts_at(0, 0)
    v.starts_at(1, 5)
    assert v.lag_ms(100) == 100  # never confirmed: as old as the view
    v.confirm(0, asked_ms=100, end=0)
    v.confirm(1, asked_ms=100, end=6)  # one record to read in partition 1
    assert v.lag_ms(150) == 150 and not v.fresh_since(100)
    v.apply(1, 5, cmd)
    assert v.fresh_since(100) and v.lag_ms(150) == 50
    assert v.aborted("a", "m", 2) and not v.aborted("a", "m", 3)
    # Nothing arrives, nothing is confirmed: the view ages (no "lag 0" for a silent view)
    assert v.lag_ms(800) == 700
    v.confirm(0, asked_ms=800, end=0)
    assert v.lag_ms(810) == 710  # partition 1 is the stalest
    v.confirm(1, asked_ms=805, end=6)
    assert v.lag_ms(810) == 10
    v.add_partitions([2])  # added while running: not fresh until confirmed
    assert v.lag_ms(820) == 820
    v.prune(older_than_ms=8)
    assert not v.aborted("a", "m", 2)


def view(status: Status, generation: int = 0, attempt: int = 1) -> StatusUpdate:
    return StatusUpdate(status, generation, attempt, 0, 0)


@pytest.mark.parametrize(
    ("record", "verdict"),
    [
        (None, Verdict.FIRE),
        (view(Status.READY), Verdict.FIRE),
        (view(Status.QUEUED), Verdict.FIRE),
        (view(Status.SENT), Verdict.DONE),
        (view(Status.FAILED), Verdict.DONE),
        (view(Status.ABORTED), Verdict.ABORTED),
        (view(Status.QUEUED, attempt=2), Verdict.STALE),
        (view(Status.QUEUED, generation=1), Verdict.STALE),
    ],
)
def test_fire_check(record: StatusUpdate | None, verdict: Verdict) -> None:
    assert fire_check(due("m", 0), record, REST_APP, aborted=False) is verdict


def test_fire_check_redrive_ahead_of_its_record_fires() -> None:
    assert fire_check(due("m", 0, generation=1), view(Status.FAILED), REST_APP, False) is (
        Verdict.FIRE
    )
    assert fire_check(due("m", 0), None, None, False) is Verdict.APP_MISSING
    assert fire_check(due("m", 0), None, REST_APP, True) is Verdict.ABORTED


def test_settle_jitter_is_deterministic_and_last_attempt_fails() -> None:
    backoff = Backoff(max_attempts=2, base_ms=1_000)
    out = AttemptOutcome(AttemptKind.RETRYABLE, "5xx", http_status=500, error="http 500")
    first = settle(due("m", 0), out, 100, backoff)
    again = settle(due("m", 0), out, 100, backoff)
    assert first.retry == again.retry and first.retry is not None
    assert 800 + 100 <= first.retry.due_ms <= 1_200 + 100
    assert 0 <= jitter_draw("m", 1) < 1
    last = settle(due("m", 0, attempt=2), out, 100, backoff)
    assert last.result.outcome is DeliveryOutcome.FAILED and last.dead_letter is not None
    assert last.retry is None
