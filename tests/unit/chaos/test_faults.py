"""The nemesis applies each link fault to the right links and heals it: a process's Cassandra
links for cassandra_*, every service's link to one broker for kafka_* (fakes for the links)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chaos.faults import Nemesis
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


def nemesis() -> tuple[Nemesis, dict[str, FakeLinks], dict[str, FakeLinks]]:
    proxies = {"releaser": FakeLinks()}
    brokers = {"kafka-2": FakeLinks()}
    releaser = SimpleNamespace(name="releaser", kind="releaser")
    fleet = SimpleNamespace(current=["dispatcher"])
    topology = Topology([], [releaser], fleet, proxies, {}, brokers)  # type: ignore[arg-type,list-item]
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    return Nemesis(topology, ManualClock(0), wait, log=lambda _: None), proxies, brokers


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
