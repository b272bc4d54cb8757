"""What the nemesis can hit, as named nodes of a kind (kafka, cassandra, ingest, bucketer,
releaser, dispatcher) with kill9 / start / pause / resume. The single-node topology is one
broker, one Cassandra node (a PrivateStack) and two processes of each service; the cluster
topology is 3 brokers and 3 Cassandra nodes (devservers/cluster.py) and the same services.
Each service process reaches every Cassandra node through a link of its own (NodeLinks)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaos.links import NodeLinks
from scheduler.testing.processes import System
from tests.support.faultstack import PrivateStack

START_ATTEMPTS = 3  # a server the launcher failed to start is started again
READY_TIMEOUT_S = 300.0  # a restarted service on a loaded 2-core host (3 min seen at load 36)


class Node(Protocol):
    name: str
    kind: str

    def kill9(self) -> None: ...
    def start(self) -> None: ...  # returns once the node answers again
    def pause(self) -> None: ...
    def resume(self) -> None: ...


@dataclass
class ServiceNode:
    """One process of a service, run by the launcher (scheduler.testing.processes.System)."""

    system: System
    name: str
    kind: str

    def kill9(self) -> None:
        self.system.kill9(self.name)

    def start(self) -> None:
        self.system.start(self.name, wait=False)
        self.system.wait_ready(self.name, timeout_s=READY_TIMEOUT_S)

    def pause(self) -> None:
        self.system.procs[self.name].send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.system.procs[self.name].send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM and wait for the exit (a Deployment update's first half)."""
        self.system.stop(self.name)

    def exited(self) -> int | None:
        """The exit code if the process ended, else None."""
        proc = self.system.procs.get(self.name)
        return None if proc is None else proc.poll()


@dataclass
class ServerNode:
    """Kafka or Cassandra of a PrivateStack: kill -9 and a restart through its launcher."""

    stack: PrivateStack
    name: str
    kind: str  # "kafka" | "cassandra": the launcher's server name too

    def kill9(self) -> None:
        self.stack.stop(self.kind, signal.SIGKILL)

    def start(self) -> None:
        """Restart what is not running and wait until it answers; again on a failed start (a
        JVM that exits at once on a loaded host), as its supervisor would."""
        for attempt in range(START_ATTEMPTS):
            try:
                self.stack.up()
                return
            except subprocess.CalledProcessError:
                if attempt == START_ATTEMPTS - 1:
                    raise
                time.sleep(5.0)

    def pause(self) -> None:
        self.stack.freeze(self.kind)

    def resume(self) -> None:
        self.stack.thaw(self.kind)


@dataclass
class ClusterServerNode:
    """A broker or Cassandra node of the cluster topology, through devservers/cluster.py's
    handle (`start` returns once the node answers again)."""

    node: Any  # cluster.Node (devservers/ is not a package: typed loosely)
    name: str
    kind: str  # "kafka" | "cassandra"

    def kill9(self) -> None:
        self.node.kill9()

    def start(self) -> None:
        for attempt in range(START_ATTEMPTS):
            try:
                self.node.start()
                return
            except Exception:
                if attempt == START_ATTEMPTS - 1:
                    raise
                time.sleep(5.0)

    def pause(self) -> None:
        self.node.pause()

    def resume(self) -> None:
        self.node.resume()


@dataclass
class DispatcherFleet:
    """The dispatcher processes of the current instance count (SCHEDULER_DISPATCH_INSTANCE(S)).

    A rescale is what `helm upgrade --set dispatcher.instances=N` does to the chart's
    Deployments, one per instance, strategy Recreate (deploy/k8s/chart/templates/
    deployments.yaml): every old process gets SIGTERM at once (its Deployment changed or was
    removed); an instance number that existed before starts its new process once the old one
    of that number has exited, a new number starts at once. New numbers therefore overlap
    with old processes still stopping, and fence them (the fencing under test)."""

    system: System
    proxies: dict[str, NodeLinks]
    links: Callable[[], NodeLinks]  # a new process's own links to Cassandra
    current: list[str] = field(default_factory=list)
    step: int = 0

    def launch(self, instances: int) -> list[str]:
        """Start every instance of `instances` (the first fleet)."""
        self.step += 1
        return [self._start(i, instances) for i in range(instances)]

    def _start(self, instance: int, instances: int) -> str:
        name = f"dispatcher-{instance}-of-{instances}-s{self.step}"
        self.system.add_replica("dispatcher", name)
        links = self.proxies[name] = self.links()
        self.system.env_overrides[name].update(
            {
                "SCHEDULER_DISPATCH_INSTANCE": str(instance),
                "SCHEDULER_DISPATCH_INSTANCES": str(instances),
                **links.env,
            }
        )
        self.system.start(name, wait=False)
        return name

    def roll(self, instances: int) -> None:
        old = self.current
        self.step += 1
        for name in old:
            self.system.procs[name].send_signal(signal.SIGTERM)
        kept = min(len(old), instances)
        new = {i: self._start(i, instances) for i in range(kept, instances)}
        for i in range(kept):
            self.system.stop(old[i])  # already signalled: waits for the exit (Recreate)
            new[i] = self._start(i, instances)
        if old[kept:]:  # System.stop() without names stops every process
            self.system.stop(*old[kept:])
        self.current = [new[i] for i in range(instances)]
        self.system.wait_ready(*self.current, timeout_s=READY_TIMEOUT_S)

    def node(self, slot: int) -> ServiceNode:
        return ServiceNode(self.system, self.current[slot % len(self.current)], "dispatcher")


@dataclass
class Topology:
    """Every node of a campaign: the servers, the service replicas, the dispatcher fleet, and
    each service process's links to Cassandra and, on the cluster, every service's link to
    each broker (what the nemesis slows or cuts). `roles` name
    a server by what it does at the moment (the broker leading a ring partition, the
    transaction coordinator): resolved when the fault fires."""

    servers: list[ServerNode | ClusterServerNode]
    services: list[ServiceNode]
    fleet: DispatcherFleet
    proxies: dict[str, NodeLinks]
    roles: dict[str, Callable[[], str]] = field(default_factory=dict)
    broker_links: dict[str, NodeLinks] = field(default_factory=dict)  # cluster: by broker

    def resolve(self, target: str, slot: int) -> ServiceNode | ServerNode | ClusterServerNode:
        if target == "dispatcher":
            return self.fleet.node(slot)
        if target in self.roles:
            target = self.roles[target]()
        nodes: list[ServiceNode | ServerNode | ClusterServerNode] = [
            *self.servers,
            *self.services,
        ]
        for node in nodes:
            if node.name == target:
                return node
        raise KeyError(target)

    def replicas(self, kind: str) -> list[ServiceNode]:
        if kind == "dispatcher":
            return [ServiceNode(self.fleet.system, n, kind) for n in self.fleet.current]
        return [s for s in self.services if s.kind == kind]

    def processes(self) -> list[ServiceNode]:
        """Every service process that should be running now."""
        return [s for s in self.services if s.kind != "dispatcher"] + self.replicas("dispatcher")
