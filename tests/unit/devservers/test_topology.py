"""The cluster topology's plan (scheduler.testing.topology): ports and addresses that collide
with nothing, per-node Kafka and Cassandra config, the service replicas' environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.testing.stack import StackSettings
from scheduler.testing.topology import (
    CASSANDRA_CLUSTER_NAME,
    ClusterPlan,
    cassandra_jvm_options,
    cassandra_yaml,
    even_tokens,
    kafka_properties,
    replace_properties,
)

pytestmark = pytest.mark.unit
PLAN = ClusterPlan()
REPO = Path(__file__).resolve().parents[3]


def all_ports(plan: ClusterPlan) -> list[tuple[str, int]]:
    """(address, port) of every listener of the cluster."""
    kafka = [
        ("127.0.0.1", p)
        for n in plan.kafka_nodes
        for p in (n.port, n.controller_port, n.proxied_port, n.proxy_port)
    ]
    cassandra = [(n.address, p) for n in plan.cassandra_nodes for p in (n.cql_port, n.storage_port)]
    services = [
        ("127.0.0.1", int(port))
        for replica in plan.service_replicas
        for key, port in replica.env.items()
        if key.endswith("PORT")
    ]
    return kafka + cassandra + services


def test_no_two_listeners_share_an_address_and_port() -> None:
    ports = all_ports(PLAN)
    assert len(ports) == len(set(ports)) == 12 + 6 + 10


def test_the_single_node_stack_and_make_up_keep_their_ports() -> None:
    single = StackSettings.from_env({})
    local = [
        int(line.split("=")[1])
        for line in (REPO / "devservers" / "local.env").read_text().splitlines()
        if line.startswith("SCHEDULER_") and line.split("=")[0].endswith("PORT")
    ]
    taken = {
        single.kafka_port,
        single.kafka_controller_port,
        single.cassandra_port,
        single.cassandra_storage_port,
        *local,
    }
    # the single node listens on 127.0.0.1 only; the cluster uses 127.0.0.1 too (node 1)
    assert not taken & {port for _, port in all_ports(PLAN)}
    assert {9092, 9093, 9042, 7000} <= taken


def test_kafka_brokers_form_one_three_voter_quorum_on_the_documented_ports() -> None:
    nodes = PLAN.kafka_nodes
    assert [(n.port, n.controller_port) for n in nodes] == [
        (19092, 19093),
        (19192, 19193),
        (19292, 19293),
    ]
    voters = {kafka_properties(PLAN, n)["controller.quorum.voters"] for n in nodes}
    assert voters == {"1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"}
    assert PLAN.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"


def test_kafka_properties_carry_the_production_replication_defaults() -> None:
    props = kafka_properties(PLAN, PLAN.kafka_nodes[1])
    assert props["node.id"] == "2"
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:19192,PROXIED://127.0.0.1:19195"
    )
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193,PROXIED://127.0.0.1:19194"
    )
    assert "PROXIED:PLAINTEXT" in props["listener.security.protocol.map"]
    assert PLAN.kafka_proxied_bootstrap == "127.0.0.1:19095,127.0.0.1:19195,127.0.0.1:19295"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_replace_properties_replaces_lines_and_appends_the_others() -> None:
    text = "node.id=1\n# comment\nlisteners=x\nnum.partitions=1\n"
    out = replace_properties(text, {"node.id": "3", "listeners": "y", "new.key": "v"})
    assert out.splitlines() == [
        "# comment",
        "num.partitions=1",
        "node.id=3",
        "listeners=y",
        "new.key=v",
    ]


def test_tokens_split_the_murmur3_ring_evenly() -> None:
    tokens = even_tokens(3)
    assert tokens == sorted(tokens) and tokens[0] == -(2**63)
    gaps = {b - a for a, b in zip(tokens, [*tokens[1:], tokens[0] + 2**64], strict=True)}
    assert max(gaps) - min(gaps) <= 2
    assert [n.token for n in PLAN.cassandra_nodes] == tokens


def test_cassandra_yaml_puts_each_node_on_its_address_with_one_seed() -> None:
    template = (REPO / "devservers" / "cassandra" / "cassandra.yaml.tmpl").read_text()
    rendered = template.replace("@@STORAGE_PORT@@", "17000").replace("@@CQL_PORT@@", "19042")
    node = PLAN.cassandra_nodes[2]
    text = cassandra_yaml(rendered, PLAN, node)
    lines = text.splitlines()
    assert "listen_address: 127.0.0.3" in lines and "rpc_address: 127.0.0.3" in lines
    assert f"cluster_name: '{CASSANDRA_CLUSTER_NAME}'" in lines
    assert "auto_bootstrap: false" in lines
    assert '      - seeds: "127.0.0.1:17000"' in lines
    # each key once: Cassandra's loader refuses a duplicated key
    keys = [line.split(":")[0] for line in lines if line and not line[0].isspace()]
    assert len(keys) == len(set(keys))


def test_cassandra_node_options_override_the_single_nodes_token_and_unsafe_system() -> None:
    options = cassandra_jvm_options(PLAN.cassandra_nodes[1])
    assert f"-Dcassandra.initial_token={PLAN.cassandra_nodes[1].token}" in options
    assert "-Dcassandra.unsafesystem=false" in options
    assert "-Dcassandra.ring_delay_ms=5000" in options


def test_two_replicas_of_each_service_dispatchers_as_instances_0_and_1_of_2() -> None:
    replicas = PLAN.service_replicas
    assert [r.name for r in replicas] == [
        f"{s}-{i}" for s in ("ingest", "bucketer", "releaser", "dispatcher") for i in (1, 2)
    ]
    dispatchers = [r.env for r in replicas if r.service == "dispatcher"]
    assert [
        (d["SCHEDULER_DISPATCH_INSTANCE"], d["SCHEDULER_DISPATCH_INSTANCES"]) for d in dispatchers
    ] == [
        ("0", "2"),
        ("1", "2"),
    ]
    ingest = [r for r in replicas if r.service == "ingest"]
    assert [r.port for r in ingest] == [18081, 18082]
    assert {r.env["SCHEDULER_INGEST_PORT"] for r in ingest} == {"18081", "18082"}


def test_services_share_the_production_replication_settings() -> None:
    env = PLAN.service_env()
    assert env["SCHEDULER_KAFKA_REPLICATION_FACTOR"] == "3"
    assert env["SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert env["SCHEDULER_CASSANDRA_REPLICATION_FACTOR"] == "3"
    assert env["SCHEDULER_CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
    assert json.loads(env["SCHEDULER_CASSANDRA_CONTACT_POINTS"]) == [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
    ]
    assert env["SCHEDULER_CASSANDRA_PORT"] == "19042"


def test_node_names_list_every_node_a_fault_can_hit() -> None:
    names = PLAN.node_names
    assert names[:6] == [f"cassandra-{i}" for i in (1, 2, 3)] + [f"kafka-{i}" for i in (1, 2, 3)]
    assert len(names) == len(set(names)) == 14
