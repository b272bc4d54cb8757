"""The campaign's load holds its rate whatever the answers take (an open loop), and an outage
does not turn into a burst afterwards."""

from __future__ import annotations

import pytest

from chaos.workload import Pacer
from scheduler.clock import ManualClock

pytestmark = pytest.mark.unit


def test_slow_answers_do_not_lower_the_rate() -> None:
    clock = ManualClock()
    pacer = Pacer(40.0, clock)
    sent = 0
    for _ in range(100):  # each turn: a 200 ms wait, then sends that took 300 ms
        clock.advance(200)
        sent += pacer.take()
        clock.advance(300)
    assert sent == 40 * 49.7  # at 40/s until the last take, 49.7 s in (a closed loop: 800)


def test_an_outage_is_not_made_up_in_a_burst() -> None:
    clock = ManualClock()
    pacer = Pacer(10.0, clock)
    clock.advance(1_000)
    assert pacer.take() == 10
    clock.advance(60_000)  # a send hung for a minute
    assert pacer.take() <= 10.0 * Pacer.MAX_OWED_S + 1
    clock.advance(1_000)
    assert pacer.take() == 10  # and then the rate again
