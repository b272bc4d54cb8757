"""The four services as real processes (their console scripts) on free ports.

One launcher for every test, benchmark and tool that needs the running system: `service_env`
renders the environment (the same variables as devservers/local.env, seconds-scale horizons),
`System` starts, kills (-9), restarts and stops the processes (all four or any subset) and
waits for their readiness probes. A process may get variables of its own (`env_overrides`, e.g.
one service through a proxy), and a service may run a second replica under another name
(`add_replica`, with its own port and log).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scheduler.cli import setup
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings

BIN = Path(sys.executable).parent
SERVICES = ("ingest", "bucketer", "releaser", "dispatcher")
# the variable of each service's HTTP port (/metrics, /healthz, /readyz; ingest's API)
PORT_VARS = {
    "ingest": "SCHEDULER_INGEST_PORT",
    "bucketer": "SCHEDULER_BUCKETER_METRICS_PORT",
    "releaser": "SCHEDULER_RELEASE_METRICS_PORT",
    "dispatcher": "SCHEDULER_DISPATCH_METRICS_PORT",
}
# ingest serves /metrics on a port of its own (its API port does not): ports["ingest:metrics"]
METRICS_PORT_VARS = {"ingest": "SCHEDULER_INGEST_METRICS_PORT"}
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


# Ports handed out for services to bind later. Not the kernel's pick (bind to port 0): that comes
# from the ephemeral range, which every outgoing connection also draws its local port from, so a
# Kafka or Cassandra client could take the port before the service binds it (CI once saw ingest
# fail with "Address already in use"). Below the ephemeral range (32768-60999 by default) only
# explicit binds compete: the stacks' fixed ports are 7000-9093, 17000-19999 and 25000-26999.
FREE_PORTS = range(30_000, 32_700)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the ephemeral range, not handed out before by this
    process; random, so that two test sessions rarely try the same one."""
    candidates = [p for p in FREE_PORTS if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> None:
    """Poll `check` until it is true; an HTTP or socket error counts as "not yet"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def group_env(topic_prefix: str) -> dict[str, str]:
    """The consumer groups a launched system would otherwise share with others on the same
    broker (`make up`'s among them): each derived from the system's own topic prefix.

    Only the bucketer's group has a fixed production default ("scheduler-bucketer"; changing it
    in production re-reads from the earliest offset, so the default stays). The releaser's and
    the dispatcher's groups, transactional ids and the releaser lease topic are derived from the
    topic prefix by the services themselves. A launched system joining `make up`'s bucketer
    group would rebalance both and route its records to the other system's bucketers."""
    if not topic_prefix:
        raise ValueError("a launched system needs a topic prefix of its own")
    group = f"{topic_prefix}bucketer"
    return {
        "SCHEDULER_BUCKETER_GROUP_ID": group,
        # the releaser checks that group for writers of an older version (bucket index upgrade)
        "SCHEDULER_RELEASE_BUCKETER_GROUP_ID": group,
    }


def service_env(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    s: SchedulingSettings,
    ports: Mapping[str, int],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment: no SCHEDULER_* of the caller leaks in; `extra` wins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(group_env(kafka.topic_prefix))
    env.update(
        {
            "SCHEDULER_ENV": "dev",  # the public development pepper
            "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SCHEDULER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SCHEDULER_KAFKA_REPLICATION_FACTOR": "1",
            "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": "1",
            "SCHEDULER_KAFKA_REQUESTS_PARTITIONS": str(kafka.requests_partitions),
            "SCHEDULER_KAFKA_COMMANDS_PARTITIONS": str(kafka.commands_partitions),
            "SCHEDULER_KAFKA_DUE_PARTITIONS": str(kafka.due_partitions),
            "SCHEDULER_KAFKA_RESULTS_PARTITIONS": str(kafka.results_partitions),
            "SCHEDULER_CASSANDRA_CONTACT_POINTS": json.dumps(cassandra.contact_points),
            "SCHEDULER_CASSANDRA_PORT": str(cassandra.port),
            "SCHEDULER_CASSANDRA_KEYSPACE": cassandra.keyspace,
            "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": "1",
            "SCHEDULER_CASSANDRA_CONSISTENCY": cassandra.consistency,
            "SCHEDULER_BUCKET_WIDTH_MS": str(s.bucket_width_ms),
            "SCHEDULER_LOOKAHEAD_MS": str(s.lookahead_ms),
            "SCHEDULER_PLACEMENT_MARGIN_MS": str(s.placement_margin_ms),
            "SCHEDULER_RING_SIZE": str(s.ring_size),
            "SCHEDULER_RING_SLOT_MS": str(s.ring_slot_ms),
            "SCHEDULER_CANCEL_GUARD_MS": str(s.cancel_guard_ms),
            "SCHEDULER_INGEST_HOST": "127.0.0.1",
            # A service not in `ports` (a subset is started) gets an ephemeral port.
            **{var: str(ports.get(name, 0)) for name, var in PORT_VARS.items()},
            **{
                var: str(ports.get(f"{name}:metrics", 0)) for name, var in METRICS_PORT_VARS.items()
            },
            "SCHEDULER_DISPATCH_ALLOW_PRIVATE_DESTINATIONS": "true",
            "SCHEDULER_DISPATCH_MAX_ATTEMPTS": "3",
            "SCHEDULER_DISPATCH_BACKOFF_BASE_MS": "200",
            "SCHEDULER_RELEASE_TICK_MS": "200",
            # Occurrences of recurring schedules: created 3 s ahead, checked five times a second.
            "SCHEDULER_RELEASE_SCHEDULE_TICK_MS": "200",
            "SCHEDULER_RELEASE_SCHEDULE_LOOKAHEAD_MS": "3000",
            # A fresh keyspace has no watermark: start just before now, not a day back.
            "SCHEDULER_RELEASE_INITIAL_BACKFILL_MS": "5000",
        }
    )
    env.update(extra or {})
    return env


@dataclass
class System:
    """The four services as processes; logs in `logs/<name>.log` (appended across restarts)."""

    env: dict[str, str]
    ports: dict[str, int]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # run each console script under this (e.g. [python, "-m", "cProfile", "-o", out])
    wrapper: list[str] = field(default_factory=list)
    # variables of one process (by name) on top of `env`, from its next start on
    env_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    # extra processes: name -> the service they run (add_replica)
    replicas: dict[str, str] = field(default_factory=dict)

    @classmethod
    def ports_for(cls, names: Iterable[str] = SERVICES) -> dict[str, int]:
        ports = {}
        for name in names:
            ports[name] = free_port()
            if name in METRICS_PORT_VARS:
                ports[f"{name}:metrics"] = free_port()
        return ports

    @property
    def ingest(self) -> str:
        return self.url("ingest")

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def metrics_url(self, name: str) -> str:
        """Where a process serves /metrics: its own port, or ingest's metrics port."""
        port = self.ports.get(f"{name}:metrics", self.ports[name])
        return f"http://127.0.0.1:{port}/metrics"

    def add_replica(self, service: str, name: str) -> None:
        """Another process of `service`, started as `name` (start, stop, kill9 ... by that
        name), on a port of its own; it shares everything else with `service`."""
        self.replicas[name] = service
        self.ports[name] = free_port()
        overrides = self.env_overrides.setdefault(name, {})
        overrides[PORT_VARS[service]] = str(self.ports[name])
        if service in METRICS_PORT_VARS:
            self.ports[f"{name}:metrics"] = free_port()
            overrides[METRICS_PORT_VARS[service]] = str(self.ports[f"{name}:metrics"])

    def add_dispatcher_instances(self, instances: int) -> None:
        """`dispatcher` becomes instance 0 of `instances`; replicas `dispatcher-1`, ... are the
        others, each owning its share of the ring's partitions (not started here)."""
        if instances == 1:
            return
        count = str(instances)
        self.env_overrides.setdefault("dispatcher", {})["SCHEDULER_DISPATCH_INSTANCES"] = count
        for i in range(1, instances):
            self.add_replica("dispatcher", f"dispatcher-{i}")
            self.env_overrides[f"dispatcher-{i}"].update(
                SCHEDULER_DISPATCH_INSTANCES=count, SCHEDULER_DISPATCH_INSTANCE=str(i)
            )

    @property
    def names(self) -> list[str]:
        """Every process name: the services, then the replicas."""
        return [*SERVICES, *self.replicas]

    def env_for(self, name: str) -> dict[str, str]:
        return {**self.env, **self.env_overrides.get(name, {})}

    def start(self, *names: str, wait: bool = True) -> None:
        for name in names or SERVICES:
            service = self.replicas.get(name, name)
            with (self.logs / f"{name}.log").open("ab") as log:
                # our own console scripts, next to this interpreter: no untrusted input
                self.procs[name] = subprocess.Popen(  # noqa: S603
                    [*self.wrapper, str(BIN / f"scheduler-{service}")],
                    env=self.env_for(name),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        if wait:
            self.wait_ready(*(names or SERVICES))

    def ready(self, name: str) -> bool:
        return httpx.get(self.url(name, "/readyz"), timeout=2).status_code == 200

    def wait_ready(self, *names: str, timeout_s: float = START_TIMEOUT_S) -> None:
        for name in names or SERVICES:
            proc = self.procs[name]

            def check(name: str = name, proc: subprocess.Popen[bytes] = proc) -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({proc.returncode})\n{self.tail()}")
                return self.ready(name)

            try:
                wait_for(f"{name} /readyz", check, timeout_s, every_s=0.3)
            except AssertionError:
                print(self.tail())
                raise

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, name: str, wait: bool = True) -> None:
        self.start(name, wait=wait)

    def stop(self, *names: str) -> dict[str, int]:
        """SIGTERM, then wait (SIGKILL after STOP_TIMEOUT_S); returns the exit codes. No
        names: every process (replicas included)."""
        chosen = [(n, self.procs[n]) for n in names or self.names if n in self.procs]
        for _, proc in chosen:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in chosen:
            try:
                codes[name] = proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def tail(self, lines: int = 25) -> str:
        out = []
        for name in self.names:
            path = self.logs / f"{name}.log"
            if path.exists():
                text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                out.append(f"--- {name} ---\n{text}")
        return "\n".join(out)

    def log_text(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_system(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    scheduling: SchedulingSettings,
    logs: Path,
    extra: Mapping[str, str] | None = None,
    dispatchers: int = 1,
) -> Iterator[System]:
    """`scheduler setup` on the given topics and keyspace, then the four services, ready; all
    stopped (SIGTERM) at the end. `dispatchers`: dispatcher instances sharing the ring's
    partitions (the first is `dispatcher`, the others `dispatcher-1`, ...)."""
    setup(kafka, cassandra, scheduling)
    ports = System.ports_for()
    system = System(service_env(kafka, cassandra, scheduling, ports, extra), ports, logs)
    system.add_dispatcher_instances(dispatchers)
    try:
        system.start(*system.names)
        yield system
    finally:
        system.stop()
