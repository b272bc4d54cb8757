"""The occurrence runner looks only at the schedules that may have something to create
(releaser/due_schedules.py): it must create exactly what a pass over every schedule at every
tick creates (the runner before the index), while reading a handful of schedules per tick."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.recurrence import Recurrence
from scheduler.store.ports import Schedule, ScheduleChange, ScheduleTiming
from scheduler.testing.fakes import InMemoryScheduleStore
from scheduler_releaser.releaser.due_schedules import (
    CHANGE_OVERLAP_MS,
    RECENT_MS,
    RESCAN_ROWS_PER_TICK,
    SWEEP_MS,
    ChangeFeed,
    DueIndex,
)
from scheduler_releaser.releaser.occurrences import OccurrenceRunner

from .test_occurrence_runner import LOOKAHEAD_MS, T0, World

pytestmark = pytest.mark.unit

RESCAN_MS = 300_000
EXPRESSIONS = ["rate(7 seconds)", "rate(1 minute)", "*/2 * * * *", "0 * * * *", "@daily"]


class CountingStore(InMemoryScheduleStore):
    """Counts the runner's reads (`gets`: schedules read by key, `reads`: the reads that
    took); `hidden` schedules' changes leave no change row, as the
    writes of a version before the change rows."""

    def __init__(self, world_clock: object) -> None:
        super().__init__(world_clock)  # type: ignore[arg-type]
        self.scans = self.gets = self.reads = 0
        self.hidden: set[str] = set()

    def scan_timings(self) -> Iterator[ScheduleTiming]:
        self.scans += 1
        return super().scan_timings()

    def get_many(self, app_id: str, schedule_ids: Sequence[str]) -> dict[str, Schedule]:
        self.reads += 1
        self.gets += len(schedule_ids)
        return super().get_many(app_id, schedule_ids)

    def changed_since(self, since_ms: int) -> Iterator[ScheduleChange]:
        return (c for c in super().changed_since(since_ms) if c.schedule_id not in self.hidden)


def counting_world() -> tuple[World, CountingStore]:
    w = World()
    store = CountingStore(w.clock)
    w.schedules = store
    w.runner._schedules = store
    w.runner._changes = ChangeFeed(store)
    return w, store


def created(w: World) -> list[tuple[str, int]]:
    return sorted((r.message_id, r.send_at_ms) for r in w.requests())


def test_a_tick_reads_only_the_schedules_that_are_due() -> None:
    w, store = counting_world()
    for i in range(1_000):  # hourly, spread over the hour
        w.add(f"s{i}", "rate(1 hour)", start_ms=T0 + 3_600 * i)
    w.runner.tick()  # the first tick reads every schedule once
    assert store.scans == 1
    before, store.gets, store.reads = len(w.requests()), 0, 0
    for _ in range(60):  # a minute of 1 s ticks: the ones due within it, not all 1,000
        w.clock.advance(1_000)
        w.runner.tick()
    assert store.scans == 1
    # s0 fired at T0 (its cursor); the look-ahead reaches 70 s: s1 and s2 at the first tick
    assert (before, len(w.requests()) - before) == (2, 17)
    assert store.gets == 2 * 17  # once to plan it, once for a pause that raced the tick
    assert store.reads == 2 * 17  # one due per tick here: a read each (one per app and tick)


def test_a_schedule_created_after_the_first_tick_is_found_at_the_next_tick() -> None:
    w, store = counting_world()
    w.runner.tick()
    w.clock.advance(1_000)
    w.add("new", "rate(2 seconds)", start_ms=T0)
    w.runner.tick()
    assert store.scans == 1  # through its change row, not a full pass
    assert [m for m, _ in created(w)] != []


def test_resume_and_an_update_to_an_earlier_time_are_found_through_their_change_rows() -> None:
    w, store = counting_world()
    w.add("paused", "rate(2 seconds)", start_ms=T0)
    w.schedules.set_paused("app-1", "paused", True, T0)
    w.add("daily", "@daily")
    w.runner.tick()
    assert w.requests() == []
    w.clock.advance(1_000)
    w.schedules.set_paused("app-1", "paused", False, w.clock.now_ms())
    stored = w.schedules.get("app-1", "daily")
    assert stored is not None
    w.schedules.update_definition(
        dataclasses.replace(stored, recurrence=Recurrence("rate(3 seconds)", start_ms=T0))
    )
    w.runner.tick()
    assert store.scans == 1
    assert {r.source for r in w.requests()} == {"schedule:paused", "schedule:daily"}


def test_a_change_without_a_change_row_is_found_by_the_next_full_pass() -> None:
    """A schedule written by a process of the version before the change rows (an upgrade)."""
    w, store = counting_world()
    w.runner.tick()
    store.hidden.add("old-writer")
    w.add("old-writer", "rate(2 seconds)", start_ms=T0)
    for _ in range(RESCAN_MS // 1_000 - 1):
        w.clock.advance(1_000)
        w.runner.tick()
    assert w.requests() == []  # not seen yet
    w.clock.advance(1_000)
    w.runner.tick()
    assert store.scans == 2
    assert {r.source for r in w.requests()} == {"schedule:old-writer"}


def test_a_change_row_that_lands_late_is_found_by_the_next_sweep() -> None:
    """Written with an instant 5 s before it became readable (a slow write, a writer's clock
    behind): older than what each tick reads back, within what a sweep does."""
    w, _ = counting_world()
    w.runner.tick()
    w.add("late", "rate(2 seconds)", start_ms=T0)
    w.schedules.hidden.add("late")  # type: ignore[attr-defined]
    for _ in range(5):
        w.clock.advance(1_000)
        w.runner.tick()
    w.schedules.hidden.clear()  # type: ignore[attr-defined]
    ticks = 0
    while not w.requests():
        w.clock.advance(1_000)
        w.runner.tick()
        ticks += 1
        assert ticks <= SWEEP_MS // 1_000, "not found by a sweep"
    assert ticks > RECENT_MS // 1_000  # not by a tick's own read-back: by the sweep


def test_a_page_of_a_full_pass_read_before_a_resume_does_not_undo_it() -> None:
    """A periodic full pass reads a page per tick; a page can hold a row read before a change
    the runner has already seen. The victim's stale row (paused) comes two ticks after its
    resume was seen: it must not take the schedule out of the index."""
    w, _ = counting_world()
    for i in range(2 * RESCAN_ROWS_PER_TICK):
        w.add(f"s{i:04d}", "@daily")
    w.add("victim", "rate(2 seconds)", start_ms=T0)  # the last row of the pass: its third page
    w.schedules.set_paused("app-1", "victim", True, T0)
    w.runner.tick()
    w.clock.advance(RESCAN_MS)
    w.runner.tick()  # the periodic pass begins: the table as it is now, first page
    w.schedules.set_paused("app-1", "victim", False, w.clock.now_ms())
    for _ in range(3):  # the resume is seen, then the third page with the stale row
        w.clock.advance(1_000)
        w.runner.tick()
    before = len([r for r in w.requests() if r.source == "schedule:victim"])
    w.clock.advance(LOOKAHEAD_MS)
    w.runner.tick()
    after = len([r for r in w.requests() if r.source == "schedule:victim"])
    assert after > before > 0


def test_after_a_failed_read_of_the_changes_the_runner_reads_every_schedule() -> None:
    """Cassandra down for longer than the change rows are read back: a change made meanwhile
    must not wait for the periodic pass."""
    w, store = counting_world()
    w.runner.tick()
    broken = True

    def changed_since(since_ms: int) -> Iterator[ScheduleChange]:
        if broken:
            raise OSError("Cassandra unavailable")
        return InMemoryScheduleStore.changed_since(store, since_ms)

    store.changed_since = changed_since  # type: ignore[method-assign]
    w.add("during", "rate(2 seconds)", start_ms=T0)
    for _ in range(CHANGE_OVERLAP_MS // 1_000 + 5):
        w.clock.advance(1_000)
        with pytest.raises(OSError):
            w.runner.tick()
    broken = False
    w.clock.advance(1_000)
    w.runner.tick()
    assert {r.source for r in w.requests()} == {"schedule:during"}


def test_a_runner_that_stops_leading_reads_everything_again_when_it_leads_again() -> None:
    w, store = counting_world()
    w.add("s", "rate(1 hour)", start_ms=T0)
    w.runner.tick()
    w.runner.forget()
    w.runner.tick()
    assert store.scans == 2


def test_the_index_keeps_the_last_wake_up_of_a_key() -> None:
    index = DueIndex()
    index.set(("a", "1"), 10)
    index.set(("a", "2"), 5)
    index.set(("a", "1"), 3)
    index.set(("a", "2"), None)
    assert index.pop_due(4) == [("a", "1")]
    assert index.pop_due(100) == []
    assert len(index) == 0


# -- the same occurrences as a pass over every schedule at every tick ---------------------------


class EveryScheduleRunner(OccurrenceRunner):
    """The runner before the index: every live schedule is looked at, at every tick."""

    def _refresh(self, now: int) -> None:
        self._index.clear()
        for s in self._schedules.scan_timings():
            self._index.set((s.app_id, s.schedule_id), now)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from(EXPRESSIONS)),
        st.tuples(st.just("update"), st.integers(0, 5), st.sampled_from(EXPRESSIONS)),
        st.tuples(st.just("pause"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("delete"), st.integers(0, 5), st.none()),
        st.tuples(st.just("wait"), st.integers(1, 200), st.none()),  # seconds, ticking each
        st.tuples(st.just("jump"), st.integers(1, 4 * 3_600), st.none()),  # an outage (s)
        st.tuples(st.just("lead"), st.integers(0, 0), st.none()),  # leadership lost and regained
    ),
    max_size=40,
)


def apply(w: World, op: tuple[str, int, object]) -> None:
    kind, n, arg = op
    sid, now = f"s{n}", w.clock.now_ms()
    stored = w.schedules.get("app-1", sid)
    if kind == "add" and stored is None:
        w.add(sid, str(arg), start_ms=T0)
    elif kind == "update" and stored is not None and stored.deleted_ms is None:
        recurrence = Recurrence(str(arg), start_ms=T0)
        w.schedules.update_definition(
            dataclasses.replace(stored, recurrence=recurrence, updated_ms=now)
        )
    elif kind == "pause" and stored is not None:
        w.schedules.set_paused("app-1", sid, bool(arg), now)
    elif kind == "delete" and stored is not None:
        w.schedules.delete("app-1", sid, now)
    elif kind == "lead":
        w.runner.forget()


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_it_creates_what_a_pass_over_every_schedule_creates(ops: list) -> None:  # type: ignore[type-arg]
    indexed, every = World(), World(EveryScheduleRunner)
    for op in ops:
        kind, n, _ = op
        for w in (indexed, every):
            apply(w, op)
        steps = n if kind == "wait" else 1
        for _ in range(steps):
            for w in (indexed, every):
                w.clock.advance(n * 1_000 if kind == "jump" else 1_000)
                w.runner.tick()
            assert created(indexed) == created(every)
    assert CHANGE_OVERLAP_MS < RESCAN_MS
