"""The production-shaped local topology (``make up TOPOLOGY=cluster``): its plan, no I/O.

Three Kafka brokers (KRaft, each a combined broker+controller, a 3-voter quorum) on distinct
ports of 127.0.0.1, three Cassandra nodes on 127.0.0.1-3 (same ports on each address), and two
processes of every service. Everything here is pure: where each node listens, what its config
says, and the environment of each service replica. ``devservers/cluster.py`` starts them;
tests and the fault-campaign runner read the endpoints from here.

Port scheme (none collides with the single-node stack's 9092/9093, 9042/7000 or `make up`'s
8080/9101-9104, so both run side by side):

* Kafka node n (1-3): client 19092 + 100 (n - 1), controller that + 1 (19092/19093,
  19192/19193, 19292/19293); a second client listener, PROXIED, on that + 2, which advertises
  that + 3, where the fault campaign runs a proxy to it (19094 -> 19095 ...): clients that
  bootstrap at the proxies reach every broker through them, so a link to one broker can be
  slowed or cut while the brokers keep their own traffic (PLAINTEXT, CONTROLLER). Nothing
  listens on the + 3 ports unless the campaign runs; other clients use PLAINTEXT.
* Cassandra node n (1-3): 127.0.0.n, CQL 19042, storage (gossip) 17000; no JMX.
* Service replica r (1-2): ingest API 18080 + r, metrics 18090 + r (ingest), 18100 + r
  (bucketer), 18110 + r (releaser), 18120 + r (dispatcher).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SERVICES = ("ingest", "bucketer", "releaser", "dispatcher")
KAFKA_CLUSTER_ID = "c1Sh-9_ISia_zwGINzRvyQ"  # fixed: formatting stays idempotent
CASSANDRA_CLUSTER_NAME = "dev-cluster"  # not the single node's "dev": they can never gossip

# offset of each port above ClusterPlan.service_port_base (+ the replica number)
_SERVICE_PORT_OFFSETS = {
    "ingest": 80,
    "ingest:metrics": 90,
    "bucketer": 100,
    "releaser": 110,
    "dispatcher": 120,
}
# the variable holding each port (as devservers/local.env)
_PORT_VARIABLES = {
    "ingest": "SCHEDULER_INGEST_PORT",
    "ingest:metrics": "SCHEDULER_INGEST_METRICS_PORT",
    "bucketer": "SCHEDULER_BUCKETER_METRICS_PORT",
    "releaser": "SCHEDULER_RELEASE_METRICS_PORT",
    "dispatcher": "SCHEDULER_DISPATCH_METRICS_PORT",
}
_MURMUR3_MIN = -(2**63)
RING_DELAY_MS = 5_000


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    port: int
    controller_port: int

    @property
    def name(self) -> str:
        return f"kafka-{self.node_id}"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@{HOST}:{self.controller_port}"

    @property
    def proxied_port(self) -> int:
        """The PROXIED listener: what a proxy in front of this broker forwards to."""
        return self.port + 2

    @property
    def proxy_port(self) -> int:
        """What the PROXIED listener advertises: where that proxy listens."""
        return self.port + 3


@dataclass(frozen=True)
class CassandraNode:
    index: int
    address: str
    cql_port: int
    storage_port: int
    token: int

    @property
    def name(self) -> str:
        return f"cassandra-{self.index}"


@dataclass(frozen=True)
class ServiceReplica:
    service: str
    replica: int
    port: int  # readiness probe (/readyz); the API port for ingest
    env: dict[str, str] = field(hash=False)  # this replica's own variables

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"


def even_tokens(count: int) -> list[int]:
    """One Murmur3 token per node, evenly spread: each node owns 1/count of the ring, so RF 3
    on 3 nodes is balanced without vnodes (num_tokens 1, as the single node)."""
    step = 2**64 // count
    return [_MURMUR3_MIN + i * step for i in range(count)]


@dataclass(frozen=True)
class ClusterPlan:
    kafka_count: int = 3
    cassandra_count: int = 3
    replicas: int = 2
    kafka_port_base: int = 19092
    cassandra_cql_port: int = 19042
    cassandra_storage_port: int = 17000
    service_port_base: int = 18000

    @property
    def replication_factor(self) -> int:
        return min(3, self.kafka_count, self.cassandra_count)

    @property
    def min_insync_replicas(self) -> int:
        return min(2, self.replication_factor)

    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        ports = [self.kafka_port_base + 100 * i for i in range(self.kafka_count)]
        return [KafkaNode(i + 1, port, port + 1) for i, port in enumerate(ports)]

    @property
    def cassandra_nodes(self) -> list[CassandraNode]:
        tokens = even_tokens(self.cassandra_count)
        return [
            CassandraNode(
                i + 1, f"127.0.0.{i + 1}", self.cassandra_cql_port, self.cassandra_storage_port, t
            )
            for i, t in enumerate(tokens)
        ]

    @property
    def seed(self) -> CassandraNode:
        return self.cassandra_nodes[0]

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.kafka_nodes)

    @property
    def kafka_proxied_bootstrap(self) -> str:
        """Through the proxies (when the fault campaign runs them): see the module's doc."""
        return ",".join(f"{HOST}:{node.proxy_port}" for node in self.kafka_nodes)

    @property
    def cassandra_contact_points(self) -> list[str]:
        return [node.address for node in self.cassandra_nodes]

    def port(self, key: str, replica: int) -> int:
        return self.service_port_base + _SERVICE_PORT_OFFSETS[key] + replica

    @property
    def service_replicas(self) -> list[ServiceReplica]:
        """Two of each service: the ingest pair on two ports, the bucketers in one group, the
        releasers as leader and standby (one lease), the dispatchers as instances 0 and 1."""
        out = []
        for service in SERVICES:
            for replica in range(1, self.replicas + 1):
                keys = [k for k in _PORT_VARIABLES if k.split(":")[0] == service]
                env = {_PORT_VARIABLES[k]: str(self.port(k, replica)) for k in keys}
                if service == "dispatcher":
                    env["SCHEDULER_DISPATCH_INSTANCE"] = str(replica - 1)
                    env["SCHEDULER_DISPATCH_INSTANCES"] = str(self.replicas)
                out.append(ServiceReplica(service, replica, self.port(service, replica), env))
        return out

    def service_env(self) -> dict[str, str]:
        """What every service replica shares, on top of devservers/local.env: the cluster's
        endpoints and the production replication defaults (RF 3, min ISR 2, LOCAL_QUORUM)."""
        rf = str(self.replication_factor)
        return {
            "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SCHEDULER_KAFKA_REPLICATION_FACTOR": rf,
            "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": str(self.min_insync_replicas),
            "SCHEDULER_CASSANDRA_CONTACT_POINTS": json.dumps(self.cassandra_contact_points),
            "SCHEDULER_CASSANDRA_PORT": str(self.cassandra_cql_port),
            "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": rf,
            "SCHEDULER_CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
        }

    @property
    def node_names(self) -> list[str]:
        """Every node a fault can hit, in start order."""
        return [
            *(n.name for n in self.cassandra_nodes),
            *(n.name for n in self.kafka_nodes),
            *(r.name for r in self.service_replicas),
        ]


# --- config rendering -----------------------------------------------------------------------


def kafka_properties(plan: ClusterPlan, node: KafkaNode) -> dict[str, str]:
    """What a cluster broker's server.properties changes from the single-node template."""
    rf = str(plan.replication_factor)
    isr = str(plan.min_insync_replicas)
    listeners = (
        f"PLAINTEXT://{node.bootstrap},CONTROLLER://{HOST}:{node.controller_port},"
        f"PROXIED://{HOST}:{node.proxied_port}"
    )
    return {
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(n.voter for n in plan.kafka_nodes),
        "listeners": listeners,
        "advertised.listeners": f"PLAINTEXT://{node.bootstrap},PROXIED://{HOST}:{node.proxy_port}",
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT"
        ),
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
    }


def replace_properties(text: str, values: dict[str, str]) -> str:
    """``key=value`` text: the given keys' lines replaced, keys not there appended."""
    lines = [line for line in text.splitlines() if line.split("=", 1)[0].strip() not in values]
    return "\n".join([*lines, *(f"{key}={value}" for key, value in values.items())]) + "\n"


def cassandra_yaml(text: str, plan: ClusterPlan, node: CassandraNode) -> str:
    """The single-node cassandra.yaml (rendered) turned into this node's: its own address, the
    cluster's name and seed, and no bootstrap streaming (a fresh, empty cluster whose tokens
    are given: joining needs no data, so no ring delay)."""
    top_level = {
        "cluster_name": f"'{CASSANDRA_CLUSTER_NAME}'",
        "listen_address": node.address,
        "rpc_address": node.address,
        "auto_bootstrap": "false",
    }
    for key, value in top_level.items():
        line = f"{key}: {value}"
        text, found = re.subn(rf"(?m)^{key}:.*$", line, text)
        if not found:
            text = text.rstrip("\n") + f"\n{line}\n"
    seed = f'      - seeds: "{plan.seed.address}:{plan.seed.storage_port}"'
    text, found = re.subn(r"(?m)^\s+- seeds:.*$", seed, text)
    if found != 1:
        raise ValueError("the cassandra.yaml template has no single `- seeds:` line")
    return text


def cassandra_jvm_options(node: CassandraNode) -> list[str]:
    """After jvm17.options on the command line (the last -D wins): this node's token instead of
    the single node's 0, and durable system tables again: with ``unsafesystem`` a node killed
    with -9 forgot the schema changes it had not flushed and skipped replaying its own writes
    to those tables ("Skipped N mutations from unknown CF"), which a fault test must not
    mistake for the system's doing. A short ring delay: a restarted seed that knows peers waits
    this long (30 s by default) for one of them to gossip before it goes on alone, and nothing
    else here needs it (no bootstrap streaming, no moves)."""
    return [
        f"-Dcassandra.initial_token={node.token}",
        "-Dcassandra.unsafesystem=false",
        f"-Dcassandra.ring_delay_ms={RING_DELAY_MS}",
    ]


def cluster_state_dir(state_dir: Path) -> Path:
    """The cluster's own state under the checkout's .local/ (never the single node's dirs)."""
    return state_dir / "cluster"
