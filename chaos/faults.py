"""Applies a nemesis schedule to a running topology, in real time, and keeps the timeline: when
each fault was injected and when it was healed (epoch ms, this host's clock, the one lateness is
measured by)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from chaos.nemesis import Fault
from chaos.nodes import Node, Topology
from scheduler.clock import Clock


@dataclass
class Window:
    """A fault as it happened: from injection to heal; `error` if applying it failed."""

    kind: str
    target: str
    detail: str
    started_ms: int
    healed_ms: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Nemesis:
    def __init__(
        self,
        topology: Topology,
        clock: Clock,
        wait: Callable[[float], bool],  # sleeps up to s seconds; True once asked to stop
        log: Callable[[str], None] = print,
    ) -> None:
        self.topology = topology
        self.clock = clock
        self.wait = wait
        self.log = log
        self.timeline: list[Window] = []
        self.lock = threading.Lock()  # the supervisor restarts nothing while a fault runs

    def run(self, faults: list[Fault], started_ms: int) -> None:
        for fault in faults:
            # a late fault (the previous one overran: a slow restart) goes at once
            ahead_s = (started_ms + fault.at_s * 1000 - self.clock.now_ms()) / 1000
            if self.wait(max(ahead_s, 0.0)):
                return
            with self.lock:
                self.apply(fault)

    def apply(self, fault: Fault) -> None:
        node = (
            self.topology.resolve(fault.target, fault.slot) if fault.kind in NODE_FAULTS else None
        )
        name = node.name if node is not None else fault.target
        detail = {
            "cassandra_delay": f"+{fault.delay_s} s",
            "kafka_delay": f"+{fault.delay_s} s",
            "rescale": f"{len(self.topology.fleet.current)} -> {fault.instances} instances",
        }.get(fault.kind, fault.target if fault.target in self.topology.roles else "")
        window = Window(fault.kind, name, detail, self.clock.now_ms())
        self.timeline.append(window)
        self.log(f"fault {fault.kind} {name} {detail} (heal after {fault.heal_after_s} s)")
        try:
            self._inject_and_heal(fault, name, node)
        except Exception as exc:  # noqa: BLE001 (a fault that fails is reported, not fatal)
            window.error = f"{type(exc).__name__}: {exc}"
            self.log(f"fault {fault.kind} {name} failed: {window.error}")
        window.healed_ms = self.clock.now_ms()

    def _inject_and_heal(self, fault: Fault, name: str, node: Node | None) -> None:
        t = self.topology
        heal_s = fault.heal_after_s
        if fault.kind in ("kill9", "kafka_kill"):
            assert node is not None
            node.kill9()
            self.wait(heal_s)
            node.start()
        elif fault.kind in ("pause", "cassandra_pause"):
            assert node is not None
            node.pause()
            self.wait(heal_s)
            node.resume()
        elif fault.kind in LINK_FAULTS:
            # a process's Cassandra links, or every service's link to one broker
            links = t.broker_links[name] if fault.kind.startswith("kafka") else t.proxies[name]
            if fault.kind.endswith("_delay"):
                links.delay(fault.delay_s, replies=True)
                self.wait(heal_s)
                links.undelay()
            else:
                links.cut()
                self.wait(heal_s)
                links.restore()
        elif fault.kind == "rolling_restart":
            for replica in t.replicas(fault.target):
                replica.terminate()
                replica.start()
        elif fault.kind == "rescale":
            t.fleet.roll(fault.instances)
        else:
            raise ValueError(f"unknown fault {fault.kind}")


NODE_FAULTS = (
    "kill9",
    "kafka_kill",
    "pause",
    "cassandra_pause",
    "cassandra_delay",
    "cassandra_cut",
)
LINK_FAULTS = ("cassandra_delay", "cassandra_cut", "kafka_delay", "kafka_cut")
