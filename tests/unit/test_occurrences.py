"""A schedule runner's tick (scheduler.domain.occurrences): examples, then properties over
generated runs of ticks with crashes between creating and storing the cursor, outages and
pauses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.occurrences import plan_tick
from scheduler.domain.recurrence import CatchUpPolicy, Recurrence
from scheduler.domain.sendat import parse_rfc3339_ms

pytestmark = pytest.mark.unit

SEC = 1_000
MIN = 60 * SEC
T0 = parse_rfc3339_ms("2027-06-01T12:00:00Z")
EVERY_MINUTE = Recurrence("rate(1 minute)", start_ms=T0)


def test_a_tick_creates_what_is_due_and_what_comes_within_the_look_ahead() -> None:
    tick = plan_tick(
        EVERY_MINUTE, None, T0 + 30 * SEC, paused=False, lookahead_ms=3 * MIN, limit=100
    )
    assert tick.create == (T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN)
    assert tick.cursor_ms == T0 + 3 * MIN and not tick.skipped


def test_the_next_tick_goes_on_from_the_cursor_without_repeating() -> None:
    first = plan_tick(EVERY_MINUTE, None, T0, paused=False, lookahead_ms=MIN, limit=100)
    second = plan_tick(
        EVERY_MINUTE, first.cursor_ms, T0 + 10 * SEC, paused=False, lookahead_ms=MIN, limit=100
    )
    third = plan_tick(
        EVERY_MINUTE, second.cursor_ms, T0 + 70 * SEC, paused=False, lookahead_ms=MIN, limit=100
    )
    assert first.create == (T0, T0 + MIN)
    assert second.create == () and second.cursor_ms == first.cursor_ms
    assert third.create == (T0 + 2 * MIN,)


def test_a_paused_schedule_creates_nothing_and_keeps_its_cursor() -> None:
    tick = plan_tick(EVERY_MINUTE, T0, T0 + 10 * MIN, paused=True, lookahead_ms=MIN, limit=100)
    assert tick.create == () and tick.cursor_ms == T0 and not tick.skipped


def test_after_a_long_outage_the_policy_decides_and_the_look_ahead_resumes() -> None:
    now = T0 + 60 * MIN + 30 * SEC  # down an hour: the grace (60 s) covers 60 min's occurrence
    tick = plan_tick(EVERY_MINUTE, T0, now, paused=False, lookahead_ms=2 * MIN, limit=100)
    # latest: the on-time occurrence (60 min) supersedes the missed ones; then the look-ahead
    assert tick.create == (T0 + 60 * MIN, T0 + 61 * MIN, T0 + 62 * MIN)
    assert tick.skipped


def test_the_look_ahead_is_filled_in_over_several_ticks_when_the_limit_bites() -> None:
    every_second = Recurrence("rate(1 second)", start_ms=T0)
    first = plan_tick(every_second, T0, T0, paused=False, lookahead_ms=5 * MIN, limit=100)
    assert len(first.create) == 100 and first.cursor_ms == T0 + 100 * SEC
    second = plan_tick(
        every_second, first.cursor_ms, T0, paused=False, lookahead_ms=5 * MIN, limit=100
    )
    assert second.create[0] == T0 + 101 * SEC


def test_a_negative_look_ahead_or_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_tick(EVERY_MINUTE, None, T0, paused=False, lookahead_ms=-1, limit=1)
    with pytest.raises(ValueError):
        plan_tick(EVERY_MINUTE, None, T0, paused=False, lookahead_ms=0, limit=-1)


# --- properties: a run of ticks, with crashes ---------------------------------------------------

EXPRESSIONS = ["rate(1 minute)", "rate(7 minutes)", "*/15 * * * *", "0 * * * *", "5 4 * * *"]
step = st.tuples(
    st.integers(min_value=0, max_value=90 * MIN),  # time to the next tick
    st.booleans(),  # the runner crashed before it stored the cursor
)


def run(
    recurrence: Recurrence, steps: list[tuple[int, bool]], lookahead_ms: int, limit: int
) -> tuple[set[int], int, int | None]:
    """The set of instants created, the last tick's instant and the stored cursor."""
    created: set[int] = set()
    cursor, now = None, T0
    for gap, crashed in steps:
        now += gap
        tick = plan_tick(
            recurrence, cursor, now, paused=False, lookahead_ms=lookahead_ms, limit=limit
        )
        assert list(tick.create) == sorted(set(tick.create))
        if cursor is not None:
            assert tick.cursor_ms is not None and tick.cursor_ms >= cursor  # never back
            assert all(t > cursor for t in tick.create)  # nothing at or before the cursor again
        created |= set(tick.create)  # a crash after creating: the messages exist
        if not crashed:
            cursor = tick.cursor_ms
    return created, now, cursor


@settings(max_examples=150, deadline=None)
@given(
    expression=st.sampled_from(EXPRESSIONS),
    steps=st.lists(step, min_size=1, max_size=25),
    lookahead_ms=st.integers(min_value=0, max_value=20 * MIN),
)
def test_with_every_missed_occurrence_kept_none_is_skipped_across_crashes(
    expression: str, steps: list[tuple[int, bool]], lookahead_ms: int
) -> None:
    recurrence = Recurrence(
        expression, start_ms=T0, catch_up=CatchUpPolicy.ALL, catch_up_limit=1000
    )
    created, now, cursor = run(recurrence, steps, lookahead_ms, limit=10_000)
    # every occurrence up to the stored cursor was created, none twice over (a set), and
    # nothing beyond the look-ahead of the last tick
    if cursor is not None:
        assert {t for t in created if t <= cursor} == set(
            recurrence.occurrences_between(T0 - 1, cursor, 10_000)
        )
    assert all(t <= now + lookahead_ms for t in created)


@settings(max_examples=150, deadline=None)
@given(
    expression=st.sampled_from(EXPRESSIONS),
    steps=st.lists(step, min_size=1, max_size=25),
    policy=st.sampled_from(list(CatchUpPolicy)),
)
def test_a_runner_that_ticks_within_the_grace_creates_every_occurrence_whatever_the_policy(
    expression: str, steps: list[tuple[int, bool]], policy: CatchUpPolicy
) -> None:
    # ticks at most 50 s apart and no crash: nothing is ever missed
    steady = [(min(gap, 50 * SEC), False) for gap, _ in steps]
    recurrence = Recurrence(expression, start_ms=T0, catch_up=policy)
    created, now, _ = run(recurrence, steady, lookahead_ms=0, limit=10_000)
    assert created == set(recurrence.occurrences_between(T0 - 1, now, 10_000))
