"""The firing loop's tick: prompt while anything is due or arriving, slower after a quiet
second, and never past a due instant."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_releaser.dispatcher.runtime import IDLE_S, QUIET_AFTER_MS, QUIET_S, loop_wait_s

pytestmark = pytest.mark.unit

NOW = 1_893_499_200_000


def test_a_quiet_second_slows_the_tick() -> None:
    assert loop_wait_s(NOW, None, NOW - QUIET_AFTER_MS) == QUIET_S
    assert loop_wait_s(NOW, NOW + 5_000, NOW - 60_000) == QUIET_S


def test_a_read_within_the_second_keeps_it_prompt() -> None:
    assert loop_wait_s(NOW, None, NOW - QUIET_AFTER_MS + 1) == IDLE_S
    assert loop_wait_s(NOW, NOW + 5_000, NOW) == IDLE_S


def test_a_message_due_within_the_second_keeps_it_prompt() -> None:
    assert loop_wait_s(NOW, NOW + QUIET_AFTER_MS, NOW - 60_000) == IDLE_S
    assert loop_wait_s(NOW, NOW + 1, NOW - 60_000) == 0.001
    assert loop_wait_s(NOW, NOW - 50, NOW - 60_000) == 0.0  # overdue: no sleep at all


@given(
    head=st.none() | st.integers(NOW - 10_000, NOW + 10_000),
    last_read=st.integers(NOW - 100_000, NOW),
)
def test_the_loop_never_sleeps_past_a_due_instant_or_longer_than_quiet(
    head: int | None, last_read: int
) -> None:
    wait = loop_wait_s(NOW, head, last_read)
    assert 0.0 <= wait <= QUIET_S
    if head is not None:
        assert NOW + wait * 1000 <= max(NOW, head)  # wakes by the due instant
    if head is not None and head - NOW <= QUIET_AFTER_MS:
        assert wait <= IDLE_S
