"""A campaign rescale rolls the dispatchers as the chart's per-instance Deployments
(strategy Recreate) do under `helm upgrade --set dispatcher.instances=N`: every old process
is signalled at once, a number that existed restarts only after its old process exited, a
new number starts at once (chaos.nodes.DispatcherFleet)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

import pytest

from chaos.nodes import DispatcherFleet
from scheduler.testing.processes import System

pytestmark = pytest.mark.unit


class Proc:
    def __init__(self, name: str, events: list[tuple[str, str]]) -> None:
        self.name, self.events = name, events

    def send_signal(self, _: int) -> None:
        self.events.append(("SIGTERM", self.name))


class FakeSystem:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.procs: dict[str, Proc] = {}
        self.env_overrides: dict[str, dict[str, str]] = defaultdict(dict)

    def add_replica(self, service: str, name: str) -> None:
        self.procs[name] = Proc(name, self.events)

    def start(self, name: str, wait: bool = True) -> None:
        self.events.append(("start", name))

    def stop(self, *names: str) -> None:
        # as System.stop: no names stops every process (a rescale that passed none stopped
        # the whole system: every service restarted at each scale-up of a campaign)
        self.events.extend(("exited", n) for n in names or ["every process"])

    def wait_ready(self, *names: str, timeout_s: float) -> None:
        self.events.append(("ready", ",".join(names)))


class Links:
    env: dict[str, str] = {}


def fleet(instances: int) -> tuple[DispatcherFleet, FakeSystem]:
    system = FakeSystem()
    f = DispatcherFleet(cast(System, system), {}, lambda: cast(Any, Links()))
    f.current = f.launch(instances)
    system.events.clear()
    return f, system


def test_scaling_up_signals_every_old_process_first_and_starts_a_new_number_at_once() -> None:
    f, system = fleet(2)
    f.roll(3)
    assert system.events == [
        ("SIGTERM", "dispatcher-0-of-2-s1"),
        ("SIGTERM", "dispatcher-1-of-2-s1"),
        ("start", "dispatcher-2-of-3-s2"),  # a new Deployment: no old pod to wait for
        ("exited", "dispatcher-0-of-2-s1"),
        ("start", "dispatcher-0-of-3-s2"),  # Recreate: after the old pod of its number
        ("exited", "dispatcher-1-of-2-s1"),
        ("start", "dispatcher-1-of-3-s2"),
        ("ready", "dispatcher-0-of-3-s2,dispatcher-1-of-3-s2,dispatcher-2-of-3-s2"),
    ]
    assert f.current == ["dispatcher-0-of-3-s2", "dispatcher-1-of-3-s2", "dispatcher-2-of-3-s2"]


def test_scaling_down_stops_the_removed_numbers_and_recreates_the_others() -> None:
    f, system = fleet(3)
    f.roll(2)
    assert system.events[:3] == [("SIGTERM", f"dispatcher-{i}-of-3-s1") for i in range(3)]
    assert system.events[3:] == [
        ("exited", "dispatcher-0-of-3-s1"),
        ("start", "dispatcher-0-of-2-s2"),
        ("exited", "dispatcher-1-of-3-s1"),
        ("start", "dispatcher-1-of-2-s2"),
        ("exited", "dispatcher-2-of-3-s1"),  # its Deployment is deleted
        ("ready", "dispatcher-0-of-2-s2,dispatcher-1-of-2-s2"),
    ]
