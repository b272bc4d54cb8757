"""The local dev stack (``devservers/``): its settings, readiness probes and ``ensure_stack()``.

One implementation shared by ``devservers/stack.py`` (the launcher) and the test fixtures.
The launcher starts Kafka (KRaft, single node) and Cassandra 5.0 as background JVMs on
127.0.0.1; this module only knows where they listen and how to tell that they answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
LAUNCHER = Path("devservers") / "stack.py"
ENV_PREFIX = "SCHEDULER_STACK_"
# Cassandra 5.0 speaks v5; unset, cassandra-driver 3.30 tries DSE v66 and v65 first (two
# refused connections, a WARNING each, and a "Protocol exception" WARN in the server log).
CQL_PROTOCOL_VERSION = 5

_PARSERS: dict[str, Callable[[str], object]] = {
    "int": int,
    "float": float,
    "str": str,
    "Path": lambda raw: Path(raw).resolve(),
}

Alive = Callable[[], bool]
"""Tells a waiting probe whether the server process still lives (stop waiting if not)."""


@dataclass(frozen=True)
class Endpoints:
    """Where a test session finds its servers."""

    kafka_bootstrap: str
    cassandra_contact_points: list[str]
    cassandra_port: int


@dataclass(frozen=True)
class StackSettings:
    """Settings of the local stack, read from ``SCHEDULER_STACK_*`` environment variables."""

    repo: Path
    state_dir: Path
    java: str
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    kafka_timeout: float = 120.0
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    cassandra_heap: str = "1G"
    cassandra_timeout: float = 240.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackSettings:
        """The defaults above, each overridable by ``SCHEDULER_STACK_<FIELD NAME>``."""
        env = os.environ if env is None else env
        repo = find_repo()
        values: dict[str, object] = {
            "repo": repo,
            "state_dir": repo / ".local",
            "java": DEFAULT_JAVA,
        }
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw and field.name != "repo":
                values[field.name] = _PARSERS[str(field.type)](raw)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.kafka_bootstrap, [HOST], self.cassandra_port)


def find_repo() -> Path:
    """The checkout holding ``devservers/stack.py``: above this file, else above the cwd."""
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for candidate in start.parents if start.is_file() else (start, *start.parents):
            if (candidate / LAUNCHER).is_file():
                return candidate
    raise FileNotFoundError(f"no {LAUNCHER} above {Path(__file__).parent} or {Path.cwd()}")


# --- probes ---------------------------------------------------------------------------------


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _split_bootstrap(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def kafka_broker_count(bootstrap: str, timeout: float = 3.0) -> int:
    """Brokers in a Metadata response; raises while Kafka does not answer."""
    from confluent_kafka.admin import AdminClient

    if not port_open(*_split_bootstrap(bootstrap), timeout=timeout):
        raise ConnectionRefusedError(f"nothing listens on {bootstrap}")
    # log_level 3: no librdkafka chatter about refused connections while the broker boots
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    return len(admin.list_topics(timeout=timeout).brokers)


def cassandra_release_version(host: str, port: int, timeout: float = 5.0) -> str:
    """``release_version`` from ``system.local``; raises while Cassandra does not answer."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    if not port_open(host, port, timeout=timeout):
        raise ConnectionRefusedError(f"nothing listens on {host}:{port}")
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout)
    cluster = Cluster(
        [host],
        port=port,
        protocol_version=CQL_PROTOCOL_VERSION,
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
        return str(row.release_version)
    finally:
        cluster.shutdown()


def kafka_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    try:
        return kafka_broker_count(bootstrap, timeout) >= 1
    except Exception:  # noqa: BLE001 - a probe: any failure means "not answering"
        return False


def cassandra_answers(host: str, port: int, timeout: float = 5.0) -> bool:
    try:
        cassandra_release_version(host, port, timeout)
    except Exception:  # noqa: BLE001 - a probe: any failure means "not answering"
        return False
    return True


def _wait(what: str, probe: Callable[[], object], timeout: float, alive: Alive | None) -> object:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - still booting: keep the last error
            last = exc
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process exited before answering (last: {last!r})")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not answer within {timeout:.0f} s (last: {last!r})")
        time.sleep(0.5)


def wait_kafka(bootstrap: str, timeout: float = 120.0, alive: Alive | None = None) -> int:
    """Wait until a Metadata request to ``bootstrap`` returns >= 1 broker; returns the count."""
    count = _wait(f"Kafka at {bootstrap}", lambda: kafka_broker_count(bootstrap), timeout, alive)
    assert isinstance(count, int)
    return count


def wait_cassandra(host: str, port: int, timeout: float = 240.0, alive: Alive | None = None) -> str:
    """Wait until CQL ``SELECT release_version FROM system.local`` works; returns the version."""
    version = _wait(
        f"Cassandra at {host}:{port}",
        lambda: cassandra_release_version(host, port),
        timeout,
        alive,
    )
    assert isinstance(version, str)
    return version


# --- on demand ------------------------------------------------------------------------------


def stack_answers(settings: StackSettings) -> bool:
    return kafka_answers(settings.kafka_bootstrap) and cassandra_answers(
        HOST, settings.cassandra_port
    )


def ensure_stack(settings: StackSettings | None = None) -> Endpoints:
    """Endpoints of the local stack; runs ``devservers/stack.py up`` first unless both answer.

    The servers are left running afterwards (``make stack-down`` stops them).
    """
    settings = settings or StackSettings.from_env()
    if not stack_answers(settings):
        launcher = settings.repo / LAUNCHER
        command = [sys.executable, str(launcher), "up"]
        subprocess.run(command, check=True, cwd=settings.repo)  # noqa: S603 - our own launcher
    return settings.endpoints
