"""Where a test session gets Kafka and Cassandra (ARCHITECTURE.md, decision 12).

In order: endpoints given in the environment; testcontainers, where a Docker engine answers;
otherwise the local stack (``devservers/stack.py``), started on demand and left running.
The same tests run in every case.

Environment:
  SCHEDULER_TEST_KAFKA_BOOTSTRAP    e.g. ``broker1:9092,broker2:9092``
  SCHEDULER_TEST_CASSANDRA_HOSTS    e.g. ``cass1,cass2`` or ``cass1:9142`` (one port for all)
  SCHEDULER_TEST_KAFKA_IMAGE        testcontainers image (default below)
  SCHEDULER_TEST_CASSANDRA_IMAGE    testcontainers image (default below)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from scheduler.testing.stack import ensure_stack, wait_cassandra, wait_kafka

KAFKA_ENV = "SCHEDULER_TEST_KAFKA_BOOTSTRAP"
CASSANDRA_ENV = "SCHEDULER_TEST_CASSANDRA_HOSTS"
# testcontainers' KafkaContainer drives Confluent's image; cp-kafka 8.1 is Apache Kafka 4.1.
KAFKA_IMAGE = "confluentinc/cp-kafka:8.1.0"
CASSANDRA_IMAGE = "cassandra:5.0"
DEFAULT_CQL_PORT = 9042
DOCKER_PING_TIMEOUT = 2.0


@dataclass(frozen=True)
class Servers:
    """Endpoints of the servers a test session uses; ``close()`` releases what was started."""

    kafka_bootstrap: str
    cassandra_contact_points: list[str]
    cassandra_port: int
    source: str
    _close: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)

    def close(self) -> None:
        self._close()


def resolve_servers(env: Mapping[str, str] | None = None) -> Servers:
    env = os.environ if env is None else env
    given = servers_from_env(env)
    if given is not None:
        return given
    if docker_answers(env):
        return start_containers(env)
    return local_stack()


def servers_from_env(env: Mapping[str, str]) -> Servers | None:
    kafka, cassandra = env.get(KAFKA_ENV, "").strip(), env.get(CASSANDRA_ENV, "").strip()
    if not kafka and not cassandra:
        return None
    if not (kafka and cassandra):
        raise ValueError(f"set both {KAFKA_ENV} and {CASSANDRA_ENV}, or neither")
    hosts, port = parse_cassandra_hosts(cassandra)
    return Servers(kafka, hosts, port, source="environment")


def parse_cassandra_hosts(value: str) -> tuple[list[str], int]:
    """``"a,b:9142"`` -> ``(["a", "b"], 9142)``; all hosts must share one port."""
    hosts, ports = [], set()
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = item.rpartition(":") if item.count(":") == 1 else ("", "", "")
        hosts.append(host if sep else item)
        if sep:
            ports.add(int(port))
    if not hosts or len(ports) > 1:
        raise ValueError(f"{CASSANDRA_ENV}={value!r}: expected host[:port],... with one port")
    return hosts, ports.pop() if ports else DEFAULT_CQL_PORT


def docker_answers(env: Mapping[str, str], timeout: float = DOCKER_PING_TIMEOUT) -> bool:
    """``GET /_ping`` on the engine of DOCKER_HOST (default: the unix socket); False if none."""
    url = urlsplit(env.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    try:
        with _connect(url, timeout) as sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n")[0]
    except OSError:
        return False
    return status_line.startswith(b"HTTP/1.") and b" 200" in status_line


def _connect(url: SplitResult, timeout: float) -> socket.socket:
    if url.scheme in ("tcp", "http") and url.hostname:
        return socket.create_connection((url.hostname, url.port or 2375), timeout=timeout)
    if url.scheme != "unix":
        raise OSError(f"unsupported DOCKER_HOST scheme {url.scheme!r}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(url.path)
    except OSError:
        sock.close()
        raise
    return sock


def start_containers(env: Mapping[str, str]) -> Servers:
    from testcontainers.community.cassandra import CassandraContainer
    from testcontainers.community.kafka import KafkaContainer

    kafka = KafkaContainer(env.get("SCHEDULER_TEST_KAFKA_IMAGE", KAFKA_IMAGE)).with_kraft()
    cassandra = CassandraContainer(env.get("SCHEDULER_TEST_CASSANDRA_IMAGE", CASSANDRA_IMAGE))

    def stop() -> None:
        for container in (kafka, cassandra):
            container.stop()  # a no-op for a container that never started

    try:
        kafka.start(timeout=120)
        cassandra.start()
        bootstrap = kafka.get_bootstrap_server()
        host, port = cassandra.get_contact_points()[0]
        wait_kafka(bootstrap, timeout=60)
        wait_cassandra(host, port, timeout=120)
    except BaseException:
        stop()
        raise
    return Servers(bootstrap, [host], port, source="testcontainers", _close=stop)


def local_stack() -> Servers:
    endpoints = ensure_stack()
    return Servers(
        endpoints.kafka_bootstrap,
        endpoints.cassandra_contact_points,
        endpoints.cassandra_port,
        source="local stack",
    )
