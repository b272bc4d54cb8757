"""devservers/cluster.py's wiring, without starting a JVM: each node's files, rendered config and
command line; the single node's stays as it was."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "devservers"))
import cluster
import stack

from scheduler.testing.stack import StackSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    base = cluster.cluster_settings({})
    return replace(base, state_dir=tmp_path / "cluster")


def test_cluster_state_lives_apart_from_the_single_nodes() -> None:
    single = StackSettings.from_env({})
    assert cluster.cluster_settings({}).state_dir == single.state_dir / "cluster"


def test_each_node_has_its_own_data_log_and_pid_file(settings: StackSettings) -> None:
    servers = cluster.jvm_servers(settings)
    assert [s.name for s in servers] == [
        "cassandra-1",
        "cassandra-2",
        "cassandra-3",
        "kafka-1",
        "kafka-2",
        "kafka-3",
    ]
    for server in servers:
        assert server.data == settings.state_dir / server.name
        assert server.pidfile == settings.state_dir / "run" / f"{server.name}.pid"
        assert server.log == settings.state_dir / "logs" / f"{server.name}.log"
        assert server.home.name in ("kafka", "cassandra")  # the shared templates


def test_a_broker_renders_its_own_properties(settings: StackSettings) -> None:
    broker = cluster.kafka_servers(settings)[2]
    broker.data.mkdir(parents=True)
    broker.write_properties()
    lines = broker.properties.read_text().splitlines()
    assert "node.id=3" in lines
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:19292,PROXIED://127.0.0.1:19295" in lines
    assert f"log.dirs={broker.data}/kraft-combined-logs" in lines
    assert sum(line.startswith("node.id=") for line in lines) == 1
    assert broker.cluster_id != stack.KAFKA_CLUSTER_ID
    # three formats at once on a loaded box outlast the single node's 60 s
    assert broker.format_timeout == settings.kafka_timeout >= 300
    assert stack.Kafka(settings).format_timeout == 60


def test_a_cassandra_node_listens_on_its_address_and_overrides_the_token(
    settings: StackSettings,
) -> None:
    node = cluster.cassandra_servers(settings)[1]
    node.prepare()
    yaml = (node.conf / "cassandra.yaml").read_text().splitlines()
    assert "listen_address: 127.0.0.2" in yaml and "native_transport_port: 19042" in yaml
    assert node.address == "127.0.0.2:19042"
    command = node.command()
    token = f"-Dcassandra.initial_token={cluster.PLAN.cassandra_nodes[1].token}"
    # after the argfile (which says 0): the last -D wins
    assert command.index(token) > command.index(f"@{node.home / 'jvm17.options'}")
    assert f"-Xmx{cluster.CASSANDRA_HEAP}" in command


def test_the_single_node_command_line_is_unchanged(tmp_path: Path) -> None:
    single = stack.Cassandra(replace(StackSettings.from_env({}), state_dir=tmp_path))
    assert single.node_options() == []
    assert not any("initial_token" in arg or "unsafesystem" in arg for arg in single.command())
    assert single.address == "127.0.0.1:9042"


def test_the_service_replicas_keep_their_files_in_the_cluster_dir(
    settings: StackSettings,
) -> None:
    services = cluster.cluster_services(settings)
    assert len(services) == 8
    dispatcher = next(s for s in services if s.name == "dispatcher-2")
    assert dispatcher.pidfile == settings.state_dir / "run" / "dispatcher-2.pid"
    env = dispatcher.environment({"SCHEDULER_DISPATCH_METRICS_PORT": "9104"})
    assert env["SCHEDULER_DISPATCH_METRICS_PORT"] == "18122"
    assert env["SCHEDULER_DISPATCH_INSTANCE"] == "1"


def test_the_fault_handle_knows_every_node_by_name(settings: StackSettings) -> None:
    handle = cluster.Cluster(settings)
    assert list(handle.nodes) == cluster.PLAN.node_names
    assert not handle.node("kafka-2").alive()  # nothing runs in a fresh state dir
    with pytest.raises(KeyError, match="kafka-9"):
        handle.node("kafka-9")
