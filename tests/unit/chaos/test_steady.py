"""The live watch that paces the nemesis: lateness read as the campaign runs (a message not
arrived yet is as late as it is now), and "back to steady" only once the windows since the heal
kept within the bound for the hold (chaos.checker's rule)."""

from __future__ import annotations

import pytest

from chaos.checker import AbortAnswer, Acked
from chaos.steady import LiveLateness, RecoveryWatch
from chaos.workload import Ledger
from scheduler.testing.receiver import Arrival, Arrivals

pytestmark = pytest.mark.unit

T0 = 1_800_000_000_000


def load(ledger: Ledger, arrivals: Arrivals, start_ms: int, end_ms: int, late_ms: int) -> None:
    """One message due every 100 ms in [start, end), each delivered `late_ms` after it."""
    for due in range(start_ms, end_ms, 100):
        message_id = f"m{due}"
        ledger.ack(Acked(message_id, "rest", due, due - 5_000))
        arrivals.add(Arrival(message_id, due + late_ms, 1, "rest"))


def test_a_message_not_arrived_is_as_late_as_it_is_now() -> None:
    ledger, arrivals = Ledger(), Arrivals()
    load(ledger, arrivals, T0, T0 + 10_000, 20)
    ledger.ack(Acked("missing", "rest", T0 + 10_000, T0))
    live = LiveLateness(ledger, arrivals)
    assert live.p99(T0, T0 + 10_000, T0 + 20_000) == 20
    assert live.p99(T0 + 10_000, T0 + 10_001, T0 + 13_000) == 3_000
    assert live.p99(T0 + 20_000, T0 + 30_000, T0 + 40_000) is None


def test_aborted_redriven_and_flaky_messages_are_left_out() -> None:
    ledger, arrivals = Ledger(), Arrivals()
    load(ledger, arrivals, T0, T0 + 1_000, 20)
    for message_id in ("aborted", "redriven", "flaky"):
        ledger.ack(Acked(message_id, "rest", T0 + 500, T0, flaky=message_id == "flaky"))
    ledger.aborts.append(AbortAnswer("aborted", 200, T0))
    ledger.redriven.add("redriven")
    assert LiveLateness(ledger, arrivals).p99(T0, T0 + 1_000, T0 + 60_000) == 20


def test_the_first_arrival_counts_and_later_reads_see_new_facts() -> None:
    ledger, arrivals = Ledger(), Arrivals()
    live = LiveLateness(ledger, arrivals)
    ledger.ack(Acked("m", "rest", T0, T0 - 1_000))
    assert live.p99(T0, T0 + 1, T0 + 500) == 500
    arrivals.add(Arrival("m", T0 + 300, 2, "rest"))
    arrivals.add(Arrival("m", T0 + 200, 1, "rest"))
    assert live.p99(T0, T0 + 1, T0 + 900) == 200


def test_steady_only_after_the_windows_since_the_heal_held_within_the_bound() -> None:
    ledger, arrivals = Ledger(), Arrivals()
    load(ledger, arrivals, T0, T0 + 60_000, 100)  # the warm-up: p99 100 ms, bound 200 ms
    watch = RecoveryWatch(LiveLateness(ledger, arrivals))
    watch.injected(T0 + 60_000)
    assert watch.bound_ms == 200
    healed = T0 + 70_000
    load(ledger, arrivals, T0 + 60_000, T0 + 80_000, 4_000)  # late until 10 s after the heal
    load(ledger, arrivals, T0 + 80_000, T0 + 200_000, 100)
    steady_at = next(now for now in range(healed, T0 + 200_000, 1_000) if watch.steady(now, healed))
    # windows judged 1 s behind now (the lag) and 5 s long: the first good one starts at
    # 80 s, and it must hold 10 s
    assert steady_at == T0 + 80_000 + 10_000 + 5_000 + 1_000


def test_a_window_from_before_the_heal_does_not_count() -> None:
    ledger, arrivals = Ledger(), Arrivals()
    load(ledger, arrivals, T0, T0 + 200_000, 10)
    watch = RecoveryWatch(LiveLateness(ledger, arrivals))
    watch.injected(T0 + 60_000)
    healed = T0 + 62_000
    assert not any(watch.steady(now, healed) for now in range(healed, healed + 16_000, 1_000))
    assert watch.steady(healed + 16_000, healed)
