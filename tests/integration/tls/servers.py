"""A Kafka broker and a Cassandra node of their own that speak only TLS and require a client
certificate, started from devservers/stack.py's launcher on free ports and a temporary state
dir (the shared local stack is left alone)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.store.cassandra import connect
from scheduler.testing.processes import free_port
from scheduler.testing.stack import HOST, Alive, StackSettings, _wait, port_open
from tests.support.certs import Pki

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "devservers"))
import stack  # devservers/ is not a package

BROKER_NAME = "localhost"  # the only name in the broker's certificate
KAFKA_HEAP = "256m"
CASSANDRA_HEAP = "512M"  # the smallest devservers/README.md found to work


def kafka_settings(bootstrap: str, pki: Pki, **changes: Any) -> KafkaSettings:
    """The project's settings for the TLS broker, with the test's client certificate."""
    base: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SSL",
        "ssl_ca_location": str(pki.ca),
        "ssl_certificate_location": str(pki.client.cert),
        "ssl_key_location": str(pki.client.key),
        "ssl_key_password": pki.client.password,
    }
    return KafkaSettings(**{**base, **changes})


def cassandra_settings(port: int, pki: Pki, **changes: Any) -> CassandraSettings:
    base: dict[str, Any] = {
        "contact_points": [HOST],
        "port": port,
        "replication_factor": 1,
        "consistency": "ONE",
        "ssl_enabled": True,
        "ssl_ca_location": str(pki.ca),
        "ssl_certificate_location": str(pki.client.cert),
        "ssl_key_location": str(pki.client.key),
        "ssl_key_password": pki.client.password,
    }
    return CassandraSettings(**{**base, **changes})


def _replace_lines(text: str, values: dict[str, str]) -> str:
    """`key=value` properties: replace the given keys' lines, append the others."""
    lines = [line for line in text.splitlines() if line.split("=", 1)[0] not in values]
    return "\n".join([*lines, *(f"{key}={value}" for key, value in values.items())]) + "\n"


class TlsKafka(stack.Kafka):
    """One SSL listener with `ssl.client.auth=required` (mTLS), PEM key store and trust store;
    the controller listener stays plaintext on loopback (it is not what the test is about).
    Its certificate names `localhost` only, the name it advertises: a client that connects to
    127.0.0.1 with hostname verification on refuses it."""

    def __init__(self, settings: StackSettings, pki: Pki) -> None:
        super().__init__(settings)
        self.pki = pki

    @property
    def address(self) -> str:
        return f"{BROKER_NAME}:{self.settings.kafka_port}"

    def prepare(self) -> None:
        super().prepare()  # renders the plaintext properties and formats the storage
        port = self.settings.kafka_port
        controller = f"CONTROLLER://{HOST}:{self.settings.kafka_controller_port}"
        tls = {
            "listeners": f"SSL://{HOST}:{port},{controller}",
            "advertised.listeners": f"SSL://{BROKER_NAME}:{port}",
            "inter.broker.listener.name": "SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SSL:SSL",
            "ssl.client.auth": "required",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.pki.broker.bundle),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.pki.ca),
            "ssl.endpoint.identification.algorithm": "https",
        }
        self.properties.write_text(_replace_lines(self.properties.read_text(), tls))

    def client_config(self) -> dict[str, Any]:
        return {**kafka_settings(self.address, self.pki).client_config(), "log_level": 3}

    def brokers(self) -> int:
        # Port first: librdkafka logs every refused connection while the broker boots.
        if not port_open(HOST, self.settings.kafka_port):
            raise ConnectionRefusedError(f"nothing listens on {self.address}")
        return len(AdminClient(self.client_config()).list_topics(timeout=3).brokers)

    def answers(self) -> bool:
        try:
            return self.brokers() >= 1
        except Exception:  # a probe: any failure means "not answering"
            return False

    def wait(self, alive: Alive) -> str:
        brokers = _wait(f"TLS Kafka at {self.address}", self.brokers, self.timeout, alive)
        return f"{brokers} broker(s) over mTLS"


class TlsCassandra(stack.Cassandra):
    """client_encryption_options on, not optional, client certificate required, PEM files read
    by Cassandra 5.0's PEMBasedSslContextFactory."""

    def __init__(self, settings: StackSettings, pki: Pki) -> None:
        super().__init__(settings)
        self.pki = pki

    def prepare(self) -> None:
        super().prepare()
        yaml = self.conf / "cassandra.yaml"
        yaml.write_text(
            yaml.read_text()
            + f"""
client_encryption_options:
  enabled: true
  optional: false
  require_client_auth: true
  keystore: {self.pki.server.bundle}
  truststore: {self.pki.ca}
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
"""
        )

    def release_version(self) -> str:
        cluster, session = connect(cassandra_settings(self.settings.cassandra_port, self.pki))
        try:
            return str(session.execute("SELECT release_version FROM system.local").one()[0])
        finally:
            cluster.shutdown()

    def answers(self) -> bool:
        try:
            return bool(self.release_version())
        except Exception:  # a probe: any failure means "not answering"
            return False

    def wait(self, alive: Alive) -> str:
        version = _wait(
            f"TLS Cassandra at {self.address}", self.release_version, self.timeout, alive
        )
        return f"release_version {version} over TLS"


@dataclass(frozen=True)
class TlsServers:
    pki: Pki
    kafka_bootstrap: str
    cassandra_port: int
    startup_s: float


def start(server: stack.Server, processes: list[subprocess.Popen[bytes]]) -> None:
    """stack.up_one for a server known to be new, keeping its process (reaped at the end)."""
    stack.check_java(server)
    server.data.mkdir(parents=True, exist_ok=True)
    server.log.parent.mkdir(parents=True, exist_ok=True)
    server.prepare()
    process = stack.spawn(server)
    processes.append(process)
    detail = stack.wait_or_fail(server, lambda: process.poll() is None, started_here=True)
    print(f"[tls servers] {server.name}: pid {process.pid} answering ({detail})", flush=True)


@contextmanager
def tls_servers(state_dir: Path, pki: Pki) -> Iterator[TlsServers]:
    """Start both in parallel; stop both on the way out, whatever happened."""
    settings = dataclasses.replace(
        StackSettings.from_env(),
        state_dir=state_dir,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap=KAFKA_HEAP,
        cassandra_port=free_port(),
        cassandra_storage_port=free_port(),
        cassandra_heap=CASSANDRA_HEAP,
    )
    servers: list[stack.Server] = [TlsCassandra(settings, pki), TlsKafka(settings, pki)]
    processes: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for server in servers:
            stack.fetch_jars(server)  # a no-op once `make stack-up` fetched them
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(lambda server: start(server, processes), servers))
        kafka = servers[1]
        yield TlsServers(pki, kafka.address, settings.cassandra_port, time.monotonic() - started)
    finally:
        # By data dir: finds this session's JVMs even if a start failed half-way.
        for server in servers:
            print(f"[tls servers] {server.name}: {stack.stop_one(server)}", flush=True)
        for process in processes:
            process.wait(timeout=10)
