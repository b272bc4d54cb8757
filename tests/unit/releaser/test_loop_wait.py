"""The firing loop's tick: prompt while anything is due or arriving, never past a due instant;
after a quiet second it waits on the ring consumer instead (RingFeed.wait), and ends the wait
long before anything held comes due."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_releaser.dispatcher.runtime import (
    IDLE_S,
    QUIET_AFTER_MS,
    QUIET_S,
    is_quiet,
    loop_wait_s,
)

pytestmark = pytest.mark.unit

NOW = 1_893_499_200_000


def test_a_quiet_second_makes_the_loop_quiet() -> None:
    assert is_quiet(NOW, None, NOW - QUIET_AFTER_MS, 0)
    assert is_quiet(NOW, NOW + QUIET_AFTER_MS + 1, NOW - 60_000, 0)


def test_a_read_within_the_second_keeps_it_ticking() -> None:
    assert not is_quiet(NOW, None, NOW - QUIET_AFTER_MS + 1, 0)
    assert not is_quiet(NOW, NOW + 5_000, NOW, 0)


def test_a_message_taken_off_the_heap_and_not_yet_fired_keeps_it_from_being_quiet() -> None:
    """Popped up to the prefetch early, it waits for its due instant and for a commands view
    within the guard: a quiet pace confirms the view only once a second, so a quiet loop held
    it up to a second (CI: 571 and 1,468 ms late, tests/integration/releaser/test_dispatch.py::
    test_a_hanging_app_does_not_delay_another_apps_deliveries)."""
    assert not is_quiet(NOW, None, NOW - 60_000, 1)


def test_a_message_due_within_the_second_keeps_it_ticking() -> None:
    assert not is_quiet(NOW, NOW + QUIET_AFTER_MS, NOW - 60_000, 0)
    assert not is_quiet(NOW, NOW - 50, NOW - 60_000, 0)
    assert loop_wait_s(NOW, NOW + QUIET_AFTER_MS) == IDLE_S
    assert loop_wait_s(NOW, NOW + 1) == 0.001
    assert loop_wait_s(NOW, NOW - 50) == 0.0  # overdue: no sleep at all


@given(
    head=st.none() | st.integers(NOW - 10_000, NOW + 10_000),
    last_read=st.integers(NOW - 100_000, NOW),
)
def test_the_loop_never_sleeps_past_a_due_instant(head: int | None, last_read: int) -> None:
    if is_quiet(NOW, head, last_read, 0):
        # the quiet wait ends QUIET_AFTER_MS minus at most QUIET_S before anything is due
        assert head is None or head - NOW > QUIET_AFTER_MS >= QUIET_S * 1000
        return
    wait = loop_wait_s(NOW, head)
    assert 0.0 <= wait <= IDLE_S
    if head is not None:
        assert NOW + wait * 1000 <= max(NOW, head)  # wakes by the due instant
