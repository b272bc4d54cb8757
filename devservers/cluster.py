"""The production-shaped local topology: 3 Kafka brokers, 3 Cassandra nodes, 2 of each service.

Driven by ``stack.py --topology cluster up|down|status|nodes|kill-node|start-node|stop-node|
pause-node|resume-node NAME`` (the servers, and any node by name) and ``system.py --topology
cluster up|down|status|setup`` (the services). The plan (ports, addresses, configs) is
``scheduler.testing.topology``; this module reuses stack.py's launcher (``up_one``, ``stop_one``,
``spawn`` ...) through two subclasses that place each node, and system.py's for the services.

For fault campaigns: ``Cluster().node("kafka-2").kill9()``, ``.start()``, ``.pause()``,
``.resume()``, ``.alive()`` (devservers/README.md, "The cluster topology").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import stack
import system

from scheduler.testing.stack import CQL_PROTOCOL_VERSION, StackSettings, kafka_broker_count
from scheduler.testing.topology import (
    KAFKA_CLUSTER_ID,
    CassandraNode,
    ClusterPlan,
    KafkaNode,
    ServiceReplica,
    cassandra_jvm_options,
    cassandra_yaml,
    cluster_state_dir,
    kafka_properties,
    replace_properties,
)

PLAN = ClusterPlan()
# Small heaps: 3 + 3 JVMs and 8 Python processes on a 2-core box shared with others.
KAFKA_HEAP = os.environ.get("SCHEDULER_CLUSTER_KAFKA_HEAP", "384m")
CASSANDRA_HEAP = os.environ.get("SCHEDULER_CLUSTER_CASSANDRA_HEAP", "512M")
JOIN_TIMEOUT_S = 120.0  # a started node until the seed sees it in the ring
# Six JVMs and eight services on two shared cores start slowly: a broker restarted on a box at
# load 10 took over 2 min to listen. Longer than the single node's 120/240 s.
KAFKA_TIMEOUT_S = float(os.environ.get("SCHEDULER_CLUSTER_KAFKA_TIMEOUT", "300"))
CASSANDRA_TIMEOUT_S = float(os.environ.get("SCHEDULER_CLUSTER_CASSANDRA_TIMEOUT", "300"))


def say(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


def cluster_settings(env: dict[str, str] | None = None) -> StackSettings:
    """stack.py's settings, moved to the cluster's state dir, ports and heaps."""
    base = StackSettings.from_env(env)
    return replace(
        base,
        state_dir=cluster_state_dir(base.state_dir),
        kafka_heap=KAFKA_HEAP,
        cassandra_heap=CASSANDRA_HEAP,
        kafka_timeout=KAFKA_TIMEOUT_S,
        cassandra_timeout=CASSANDRA_TIMEOUT_S,
        cassandra_port=PLAN.cassandra_cql_port,
        cassandra_storage_port=PLAN.cassandra_storage_port,
    )


# --- the JVM nodes --------------------------------------------------------------------------


class ClusterKafka(stack.Kafka):
    """One broker+controller of the 3-voter quorum; data, log and pid file named after it."""

    cluster_id = KAFKA_CLUSTER_ID

    def __init__(self, settings: StackSettings, node: KafkaNode) -> None:
        super().__init__(settings)
        self.node = node
        name_files(self, node.name)
        # three formats at once beside the Cassandra start: 13 s each at load 4, over 60 s at 20
        self.format_timeout = settings.kafka_timeout

    @property
    def address(self) -> str:
        return self.node.bootstrap

    def write_properties(self) -> None:
        super().write_properties()
        text = self.properties.read_text()
        self.properties.write_text(replace_properties(text, kafka_properties(PLAN, self.node)))


class ClusterCassandra(stack.Cassandra):
    """One node of the ring, on its own loopback address (same ports as its siblings)."""

    def __init__(self, settings: StackSettings, node: CassandraNode) -> None:
        super().__init__(settings)
        self.node = node
        name_files(self, node.name)

    @property
    def host(self) -> str:
        return self.node.address

    def prepare(self) -> None:
        super().prepare()
        yaml = self.conf / "cassandra.yaml"
        yaml.write_text(cassandra_yaml(yaml.read_text(), PLAN, self.node))

    def node_options(self) -> list[str]:
        return cassandra_jvm_options(self.node)


def name_files(server: stack.Server, name: str) -> None:
    """Data dir, log and pid file per node (the class's name stays the config dir's)."""
    server.name = name
    server.data = server.settings.state_dir / name
    server.log = server.settings.state_dir / "logs" / f"{name}.log"
    server.pidfile = server.settings.state_dir / "run" / f"{name}.pid"


def cassandra_servers(settings: StackSettings) -> list[ClusterCassandra]:
    return [ClusterCassandra(settings, node) for node in PLAN.cassandra_nodes]


def kafka_servers(settings: StackSettings) -> list[ClusterKafka]:
    return [ClusterKafka(settings, node) for node in PLAN.kafka_nodes]


def ring_view(host: str, port: int, timeout: float = 5.0) -> set[str]:
    """The nodes with tokens (joined: NORMAL) in ``host``'s view, itself included."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=timeout
    )
    cluster = Cluster(
        [host],
        port=port,
        protocol_version=CQL_PROTOCOL_VERSION,
        connect_timeout=timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        session = cluster.connect()
        peers = session.execute("SELECT peer, tokens FROM system.peers_v2")
        return {host} | {str(row.peer) for row in peers if row.tokens}
    finally:
        cluster.shutdown()


def wait_joined(server: ClusterCassandra, expected: set[str]) -> None:
    """Until the seed and the new node both list ``expected`` in the ring (UN as the seed and
    the node see it), so the next node joins a settled ring."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    views = {PLAN.seed.address, server.node.address}
    last: object = None
    while time.monotonic() < deadline:
        try:
            if all(expected <= ring_view(h, server.settings.cassandra_port) for h in views):
                return
        except Exception as exc:  # still joining: keep the last error
            last = exc
        time.sleep(0.5)
    raise stack.StackError(f"{server.name}: not in the ring after {JOIN_TIMEOUT_S:.0f} s ({last})")


def up_cassandra(settings: StackSettings) -> list[str]:
    """One node at a time, each joined before the next starts (seed first)."""
    lines, joined = [], set()
    for server in cassandra_servers(settings):
        lines.append(f"{server.name}: {stack.up_one(server)}")
        say(lines[-1])
        joined.add(server.node.address)
        wait_joined(server, joined)
        say(f"{server.name}: in the ring ({len(joined)} of {PLAN.cassandra_count} up and normal)")
    return lines


def up_kafka(settings: StackSettings) -> list[str]:
    """All three at once: no broker answers before a quorum of controllers (2 of 3) runs."""
    servers = kafka_servers(settings)
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        results = list(pool.map(stack.up_one, servers))
    lines = [f"{s.name}: {r}" for s, r in zip(servers, results, strict=True)]
    for line in lines:
        say(line)
    deadline = time.monotonic() + settings.kafka_timeout
    while kafka_broker_count(PLAN.kafka_bootstrap) < PLAN.kafka_count:
        if time.monotonic() >= deadline:
            raise stack.StackError(f"kafka: fewer than {PLAN.kafka_count} brokers registered")
        time.sleep(0.5)
    say(f"kafka: {PLAN.kafka_count} brokers registered ({PLAN.kafka_bootstrap})")
    return lines


def jvm_servers(settings: StackSettings) -> list[stack.Server]:
    return [*cassandra_servers(settings), *kafka_servers(settings)]


def total_rss_mib(pids: list[int]) -> float:
    return sum(stack.rss_mib(pid) or 0.0 for pid in pids)


def up() -> int:
    settings = cluster_settings()
    started = time.monotonic()
    with stack.stack_lock(settings):
        try:
            for server in (cassandra_servers(settings)[0], kafka_servers(settings)[0]):
                stack.fetch_jars(server)  # the jars are shared with the single node
        except (stack.StackError, subprocess.SubprocessError, OSError) as exc:
            say(f"FAILED: {exc}")
            return 1
        if not start_all(settings):
            return 1
    pids = [pid for server in jvm_servers(settings) for pid in stack.find_pids(server)]
    say(
        f"up: 3 Kafka + 3 Cassandra answering in {time.monotonic() - started:.1f} s;"
        f" RSS of the 6 JVMs {total_rss_mib(pids) / 1024:.2f} GiB"
    )
    return 0


FAILURES = (stack.StackError, subprocess.SubprocessError, OSError, RuntimeError, TimeoutError)


def start_all(settings: StackSettings) -> bool:
    """The ring and the quorum together; a failure of either is said at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {
            pool.submit(up_cassandra, settings): "cassandra",
            pool.submit(up_kafka, settings): "kafka",
        }
        ok = True
        for job in as_completed(jobs):
            try:
                job.result()
            except FAILURES as exc:
                say(f"{jobs[job]}: FAILED: {exc}")
                ok = False
    return ok


def down() -> int:
    settings = cluster_settings()
    with stack.stack_lock(settings), ThreadPoolExecutor(max_workers=6) as pool:
        servers = jvm_servers(settings)
        for server, line in zip(servers, pool.map(stack.stop_one, servers), strict=True):
            say(f"{server.name}: {line}")
    return 0


def status() -> int:
    settings = cluster_settings()
    servers = jvm_servers(settings)
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        for server, line in zip(servers, pool.map(stack.status_one, servers), strict=True):
            say(f"{server.name}: {line}")
    cluster = Cluster(settings)
    pids = [pid for node in cluster.nodes.values() if (pid := node.pid()) is not None]
    say(f"{len(pids)} of {len(cluster.nodes)} nodes running; RSS {total_rss_mib(pids):.0f} MiB")
    return 0


# --- the services ---------------------------------------------------------------------------


def cluster_env() -> dict[str, str]:
    """devservers/local.env, then the cluster's endpoints and replication; the environment
    still wins over both (as for the single node)."""
    profile = system.local_env()
    return {**profile, **PLAN.service_env(), **os.environ}


def service_of(replica: ServiceReplica, state_dir: Path) -> system.Service:
    base = next(s for s in system.SERVICES if s.name == replica.service)
    return replace(
        base, name=replica.name, overrides=tuple(replica.env.items()), state_dir=state_dir
    )


def cluster_services(settings: StackSettings | None = None) -> tuple[system.Service, ...]:
    state_dir = (settings or cluster_settings()).state_dir
    return tuple(service_of(replica, state_dir) for replica in PLAN.service_replicas)


# --- the fault handle -----------------------------------------------------------------------


@dataclass
class Node:
    """One node of the cluster: a JVM (``server``) or a service process (``service``).

    ``kill9``/``stop`` leave it dead until ``start``, which blocks until it answers again (a
    broker killed with -9 takes ~10 s more: the controller waits out its old registration).
    ``pause`` (SIGSTOP) freezes it with its sockets open, as a GC pause or a hung host would;
    ``resume`` (SIGCONT) undoes it; a paused node counts as alive."""

    name: str
    server: stack.Server | None = None
    service: system.Service | None = None
    env: dict[str, str] | None = None

    def pid(self) -> int | None:
        if self.server is not None:
            pids = stack.find_pids(self.server)  # /proc, so a lost pid file hides nothing
            return pids[0] if pids else None
        assert self.service is not None
        return system.running_pid(self.service)

    def alive(self) -> bool:
        return self.pid() is not None

    def answers(self) -> bool:
        if self.server is not None:
            return self.server.answers()
        assert self.service is not None and self.env is not None
        return system.probe(self.service.url(self.service.environment(self.env), "/readyz"))[0]

    def signal(self, signum: signal.Signals) -> int:
        pid = self.pid()
        if pid is None:
            raise stack.StackError(f"{self.name} is not running")
        os.kill(pid, signum)
        return pid

    def kill9(self) -> int:
        pid = self.signal(signal.SIGKILL)
        if not stack.wait_gone([pid], 10.0):
            raise stack.StackError(f"{self.name}: pid {pid} survived SIGKILL")
        return pid

    def pause(self) -> int:
        return self.signal(signal.SIGSTOP)

    def resume(self) -> int:
        return self.signal(signal.SIGCONT)

    def stop(self) -> str:
        if self.server is not None:
            return stack.stop_one(self.server)
        pid = self.pid()
        if pid is None:
            return "not running"
        os.kill(pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        return f"stopped pid {pid} ({stack.terminate([pid], system.STOP_GRACE_S)})"

    def start(self) -> str:
        """Start it (a no-op if it answers) and wait until it answers; its report line.

        Through the launcher in a process of its own (`stack.py --topology cluster start-node`):
        the node is then that short-lived process's child, not the caller's, so a test or a
        fault runner holds no Popen of a process meant to outlive it (ResourceWarning)."""
        command = [sys.executable, str(Path(stack.__file__)), "--topology", "cluster"]
        done = subprocess.run(
            [*command, "start-node", self.name], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise stack.StackError(f"{self.name}: start failed\n{done.stdout}{done.stderr}")
        prefix = f"[cluster] {self.name}: start-node: "
        lines = [line for line in done.stdout.splitlines() if line.startswith(prefix)]
        return lines[-1].removeprefix(prefix) if lines else done.stdout.strip()

    def start_here(self) -> str:
        """`start`'s work, in this process (what `start-node` runs)."""
        if self.server is not None:
            return stack.up_one(self.server)
        assert self.service is not None and self.env is not None
        env = self.service.environment(self.env)
        began = time.monotonic()
        if not system.ensure_started(self.service, env):
            return f"already ready (pid {self.pid()})"
        system.wait_ready(self.service, env)
        return f"started pid {self.pid()}; ready after {time.monotonic() - began:.1f} s"


class Cluster:
    """Every node of the cluster topology by name: cassandra-1..3, kafka-1..3 and the service
    replicas (ingest-1, ingest-2, bucketer-1 ... dispatcher-2)."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or cluster_settings()
        self.plan = PLAN
        env = cluster_env()
        self.nodes: dict[str, Node] = {s.name: Node(s.name, server=s) for s in self.jvms()}
        for service in cluster_services(self.settings):
            self.nodes[service.name] = Node(service.name, service=service, env=env)

    def jvms(self) -> list[stack.Server]:
        return jvm_servers(self.settings)

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self.nodes)}") from None


# --- stack.py --topology cluster ... --------------------------------------------------------

NODE_ACTIONS: dict[str, Callable[[Node], object]] = {
    "kill-node": Node.kill9,
    "start-node": Node.start_here,
    "stop-node": Node.stop,
    "pause-node": Node.pause,
    "resume-node": Node.resume,
}


def nodes() -> int:
    """One line per node: name, pid, alive."""
    for name, node in Cluster().nodes.items():
        pid = node.pid()
        say(f"{name}: {'pid ' + str(pid) if pid else 'not running'}")
    return 0


def run(command: str, name: str | None) -> int:
    if command in NODE_ACTIONS:
        if not name:
            raise SystemExit(f"{command} needs a node name: {', '.join(PLAN.node_names)}")
        try:
            result = NODE_ACTIONS[command](Cluster().node(name))
        except (KeyError, stack.StackError, RuntimeError) as exc:
            say(f"{name}: FAILED: {exc}")
            return 1
        say(f"{name}: {command}: {result}")
        return 0
    return {"up": up, "down": down, "status": status, "nodes": nodes}[command]()
