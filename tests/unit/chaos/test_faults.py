"""The nemesis applies each link fault to the right links and heals it: a process's Cassandra
links for cassandra_*, every service's link to one broker for kafka_* (fakes for the links)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chaos.faults import STEADY_WAIT_S, Nemesis
from chaos.nemesis import Fault
from chaos.nodes import Topology
from scheduler.clock import ManualClock

pytestmark = pytest.mark.unit


class FakeLinks:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def delay(self, seconds: float, *, replies: bool = False) -> None:
        self.calls.append(("delay", seconds, replies))

    def undelay(self) -> None:
        self.calls.append(("undelay",))

    def cut(self) -> None:
        self.calls.append(("cut",))

    def restore(self) -> None:
        self.calls.append(("restore",))


def topology(proxies: dict[str, FakeLinks], brokers: dict[str, FakeLinks]) -> Topology:
    """A releaser with its Cassandra links `proxies`, and the services' links to `brokers`."""
    releaser = SimpleNamespace(name="releaser", kind="releaser")
    fleet = SimpleNamespace(current=["dispatcher"])
    return Topology([], [releaser], fleet, proxies, {}, brokers)  # type: ignore[arg-type,list-item]


def nemesis() -> tuple[Nemesis, dict[str, FakeLinks], dict[str, FakeLinks]]:
    proxies = {"releaser": FakeLinks()}
    brokers = {"kafka-2": FakeLinks()}
    return (
        Nemesis(topology(proxies, brokers), ManualClock(0), lambda _s: False, lambda _: None),
        proxies,
        brokers,
    )


@pytest.mark.parametrize(
    ("kind", "target", "expected"),
    [
        ("cassandra_delay", "releaser", [("delay", 1.5, True), ("undelay",)]),
        ("cassandra_cut", "releaser", [("cut",), ("restore",)]),
        ("kafka_delay", "kafka-2", [("delay", 1.5, True), ("undelay",)]),
        ("kafka_cut", "kafka-2", [("cut",), ("restore",)]),
    ],
)
def test_a_link_fault_hits_its_links_and_heals_them(
    kind: str, target: str, expected: list[tuple[Any, ...]]
) -> None:
    n, proxies, brokers = nemesis()
    n.apply(Fault(0.0, kind, target, heal_after_s=2.0, delay_s=1.5))
    hit, spared = (brokers, proxies) if kind.startswith("kafka") else (proxies, brokers)
    assert next(iter(hit.values())).calls == expected
    assert next(iter(spared.values())).calls == []
    [window] = n.timeline
    assert (window.kind, window.target, window.error) == (kind, target, "")


class FakeRecovery:
    """Steady from `steady_from_ms` on; records what the nemesis asked."""

    def __init__(self, steady_from_ms: int) -> None:
        self.steady_from_ms = steady_from_ms
        self.injected_at: list[int] = []

    def injected(self, at_ms: int) -> None:
        self.injected_at.append(at_ms)

    def steady(self, now_ms: int, healed_ms: int) -> bool:
        return now_ms >= self.steady_from_ms


def paced(recovery: FakeRecovery | None) -> Nemesis:
    clock = ManualClock(0)

    def wait(seconds: float) -> bool:  # the wall clock, as the runner's stop.wait sees it
        clock.advance(int(seconds * 1000))
        return False

    return Nemesis(topology({"releaser": FakeLinks()}, {}), clock, wait, lambda _: None, recovery)


TWO_CUTS = [
    Fault(15.0, "cassandra_cut", "releaser", heal_after_s=5.0, gap_s=10.0),
    Fault(30.0, "cassandra_cut", "releaser", heal_after_s=5.0, gap_s=10.0),
]


def test_the_next_fault_waits_for_the_system_to_be_back_to_steady() -> None:
    recovery = FakeRecovery(steady_from_ms=62_500)
    n = paced(recovery)
    n.run(TWO_CUTS, started_ms=0)
    first, second = n.timeline
    assert (first.started_ms, first.healed_ms) == (15_000, 20_000)
    # the gap (10 s) is a minimum; steady came 42.5 s after the heal, seen at the next probe
    assert second.started_ms == 63_000
    assert recovery.injected_at == [15_000, 63_000]


def test_the_gap_alone_when_already_steady() -> None:
    n = paced(FakeRecovery(steady_from_ms=0))
    n.run(TWO_CUTS, started_ms=0)
    assert n.timeline[1].started_ms == 30_000


def test_a_system_never_back_to_steady_gets_its_next_fault_after_the_longest_wait() -> None:
    n = paced(FakeRecovery(steady_from_ms=10**12))
    n.run(TWO_CUTS, started_ms=0)
    assert n.timeline[1].started_ms == 20_000 + int(STEADY_WAIT_S * 1000)


def test_without_a_watch_the_gap_alone_paces() -> None:
    n = paced(None)
    n.run(TWO_CUTS, started_ms=0)
    assert n.timeline[1].started_ms == 30_000
