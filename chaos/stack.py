"""The campaign's own servers, by topology (`--topology`):

* ``single``: one Kafka broker and one Cassandra node of its own, a PrivateStack on ports and a
  state dir of its own (neither the shared stack's 9092/9042 nor the fault tests' 29092/29042),
  so a broker kill or a Cassandra pause never reaches anyone else's run. Its ports are below
  Linux's ephemeral range (32768-60999): while the broker is down, clients reconnect in a loop,
  and a connect to a port of that range can be given the same port as its own source and
  connect to itself (TCP simultaneous open); the restarted broker then found its port taken
  ("Address already in use"; seen with 39092).
* ``cluster``: the production-shaped topology of ``make up TOPOLOGY=cluster`` (3 brokers at
  RF 3 / min ISR 2, 3 Cassandra nodes on 127.0.0.1-3 at LOCAL_QUORUM; devservers/cluster.py),
  started if it does not run. The campaign's topics and keyspace are its own (a unique prefix),
  but the nodes are shared with `make up TOPOLOGY=cluster` and `make test-cluster`: a broker
  kill reaches them too, so run one of them at a time.

Each gives the endpoints, the services' replication settings and the nodes the nemesis hits."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from chaos.links import NodeLinks
from chaos.nodes import ClusterServerNode, ServerNode
from scheduler.testing.servers import Servers
from scheduler.testing.stack import find_repo
from scheduler.testing.topology import ClusterPlan
from tests.support.faultstack import PrivateStack

MAKE_CHAOS_PORTS = 25000  # `make chaos`
CI_PORTS = 26000  # tests/e2e/test_chaos.py: a campaign by hand does not stop the CI one's stack
CLUSTER_UP_TIMEOUT_S = 900.0  # 3 + 3 JVMs on two cores: 2 to 7 minutes by the host's load


def chaos_stack(base: int = MAKE_CHAOS_PORTS) -> PrivateStack:
    """Kafka on base+92 (controller base+93), Cassandra on base+42 (storage base+0)."""
    suffix = "" if base == MAKE_CHAOS_PORTS else f"-{base}"
    return PrivateStack(
        kafka_port=base + 92,
        kafka_controller_port=base + 93,
        cassandra_port=base + 42,
        cassandra_storage_port=base,
        state_dir=find_repo() / ".local" / f"chaos-stack{suffix}",
    )


@dataclass
class SingleStack:
    private: PrivateStack
    replication: int = 1
    production_env: dict[str, str] = field(default_factory=dict)  # service_env's RF 1 stands

    @property
    def servers(self) -> Servers:
        return Servers(
            self.private.kafka_bootstrap, ["127.0.0.1"], self.private.cassandra_port, "chaos"
        )

    def up(self) -> None:
        self.private.up()

    def down(self) -> None:
        self.private.down()

    def broker_links(self) -> dict[str, NodeLinks]:
        return {}  # a client finds the one broker at the address it advertises: no proxy

    def services_bootstrap(self) -> str:
        return self.private.kafka_bootstrap

    def server_nodes(self) -> list[ServerNode | ClusterServerNode]:
        return [
            ServerNode(self.private, "kafka", "kafka"),
            ServerNode(self.private, "cassandra", "cassandra"),
        ]


PLAN = ClusterPlan()


@dataclass
class ClusterStack:
    kafka_links: bool = False  # the services reach the brokers through proxies (--kafka-links)
    replication: int = PLAN.replication_factor
    production_env: dict[str, str] = field(
        default_factory=lambda: {
            "SCHEDULER_KAFKA_REPLICATION_FACTOR": str(PLAN.replication_factor),
            "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": str(PLAN.min_insync_replicas),
            "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": str(PLAN.replication_factor),
            "SCHEDULER_CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
        }
    )

    @property
    def servers(self) -> Servers:
        return Servers(
            PLAN.kafka_bootstrap, PLAN.cassandra_contact_points, PLAN.cassandra_cql_port, "cluster"
        )

    def _launcher(self, command: str) -> None:
        repo = find_repo()
        launcher = [sys.executable, str(repo / "devservers" / "stack.py"), "--topology", "cluster"]
        subprocess.run(  # noqa: S603 (our own launcher, no user input)
            [*launcher, command], cwd=repo, check=True, timeout=CLUSTER_UP_TIMEOUT_S
        )

    def up(self) -> None:
        self._launcher("up")

    def down(self) -> None:
        self._launcher("down")

    def broker_links(self) -> dict[str, NodeLinks]:
        """With kafka_links, a proxy where each broker's PROXIED listener advertises itself
        (the services reach every broker through these; scheduler.testing.topology)."""
        if not self.kafka_links:
            return {}
        return {n.name: NodeLinks.broker(n.proxy_port, n.proxied_port) for n in PLAN.kafka_nodes}

    def services_bootstrap(self) -> str:
        return PLAN.kafka_proxied_bootstrap if self.kafka_links else PLAN.kafka_bootstrap

    def server_nodes(self) -> list[ServerNode | ClusterServerNode]:
        handle = cluster_handle()
        names = [n.name for n in PLAN.kafka_nodes] + [n.name for n in PLAN.cassandra_nodes]
        return [ClusterServerNode(handle.node(n), n, n.split("-")[0]) for n in names]


def cluster_handle() -> Any:
    """devservers/cluster.py's Cluster (devservers/ is scripts, not a package: its modules
    import each other by bare name, so the folder goes on sys.path)."""
    devservers = str(find_repo() / "devservers")
    if devservers not in sys.path:
        sys.path.insert(0, devservers)
    import cluster

    return cluster.Cluster()


def campaign_stack(
    topology: str, ports: int = MAKE_CHAOS_PORTS, kafka_links: bool = False
) -> SingleStack | ClusterStack:
    if topology == "cluster":
        return ClusterStack(kafka_links)
    return SingleStack(chaos_stack(ports))
