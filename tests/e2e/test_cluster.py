"""On the 3-node cluster (`make up TOPOLOGY=cluster`'s servers): kill -9 the broker leading a
ring partition and one Cassandra node while messages are due; with RF 3, min ISR 2 and
LOCAL_QUORUM every message is still delivered, none early, none lost, no KAFKA duplicate.

Marked `cluster`: it starts the cluster if it does not run (3 + 3 JVMs: 2 to 7 min on this
2-core box, by its load), so plain `make test` deselects it (tests/conftest.py) and
`make test-cluster` runs it; on a running cluster it takes ~5 min (docs: devservers/README.md).
It never skips: a cluster that does not come up fails the test. The killed nodes are started
again at the end; the cluster is left running (`make down TOPOLOGY=cluster` stops it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from scheduler.clock import SystemClock
from scheduler.testing.isolation import private_cassandra, private_kafka, unique_name
from scheduler.testing.servers import Servers
from scheduler.testing.topology import ClusterPlan
from tests.support.ledger import Ledger
from tests.support.workload import produce, schedule_batch

from .conftest import World, world

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "devservers"))
import cluster  # noqa: E402 - devservers/ is not a package: after the sys.path line

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(1200)]

CLOCK = SystemClock()
PLAN = ClusterPlan()
PRODUCTION = {  # what the services run with on the cluster (scheduler setup included)
    "SCHEDULER_KAFKA_REPLICATION_FACTOR": "3",
    "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": "2",
    "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": "3",
    "SCHEDULER_CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
}
VICTIM_CASSANDRA = "cassandra-2"  # not the seed: a restart of the seed alone is also fine


@pytest.fixture(scope="module")
def handle() -> cluster.Cluster:
    """The cluster, started (or found running) by the launcher; a failure fails the test."""
    up = [sys.executable, str(ROOT / "devservers" / "stack.py"), "--topology", "cluster", "up"]
    subprocess.run(up, check=True, cwd=ROOT, timeout=900)
    return cluster.Cluster()


@pytest.fixture(scope="module")
def cluster_world(
    handle: cluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    servers = Servers(
        PLAN.kafka_bootstrap, PLAN.cassandra_contact_points, PLAN.cassandra_cql_port, "cluster"
    )
    unique = unique_name()
    kafka = private_kafka(servers, unique).model_copy(
        update={"replication_factor": 3, "min_insync_replicas": 2, "due_partitions": 2}
    )
    cassandra = private_cassandra(servers, unique).model_copy(
        update={"replication_factor": 3, "consistency": "LOCAL_QUORUM"}
    )
    with world(kafka, cassandra, tmp_path_factory.mktemp("cluster"), PRODUCTION) as w:
        yield w


def ring_leader(w: World, due_ms: int) -> int:
    """The broker (node id) leading partition 0 of the ring topic ``due_ms`` falls in."""
    topic = w.scheduling.ring(w.kafka).topic_for(due_ms)
    admin = AdminClient(w.kafka.client_config())
    metadata = admin.list_topics(topic, timeout=10)
    return int(metadata.topics[topic].partitions[0].leader)


def restart(handle: cluster.Cluster, name: str) -> str:
    return handle.node(name).start()


def schedule(w: World, ledger: Ledger, offsets_ms: list[int], tag: str) -> None:
    """Through the API (REST and KAFKA app) and straight into Kafka, due at now + offsets."""
    now = CLOCK.now_ms()
    for app in (w.rest, w.kafka_app):
        schedule_batch(app, ledger, [now + o for o in offsets_ms], tag=tag)
        produce(w.kafka, w.scheduling, app, ledger, [now + o + 500 for o in offsets_ms])


def test_a_broker_and_a_cassandra_node_killed_lose_nothing(
    handle: cluster.Cluster, cluster_world: World
) -> None:
    w = cluster_world
    ledger = Ledger()
    # near (the ring directly) and far (Cassandra, then the releaser) messages, before the faults
    schedule(w, ledger, [1_000, 3_000, 6_000, 9_000, 14_000, 20_000], tag="before")
    broker = f"kafka-{ring_leader(w, CLOCK.now_ms() + 6_000)}"
    killed = [broker, VICTIM_CASSANDRA]
    try:
        for name in killed:
            handle.node(name).kill9()
        killed_at = time.monotonic()
        # and more while both are dead: acks=all with 2 of 3 in sync, LOCAL_QUORUM with 2 of 3
        schedule(w, ledger, [2_000, 5_000, 10_000, 16_000], tag="during")
        report = w.wait_delivered(ledger, timeout_s=180)
        print(f"killed {killed}; {report.summary()}; {time.monotonic() - killed_at:.0f} s after")
        assert not handle.node(broker).alive() and not handle.node(VICTIM_CASSANDRA).alive()
    finally:  # both at once: each restart takes 1-2 minutes on a loaded box
        with ThreadPoolExecutor(max_workers=len(killed)) as pool:
            for name, line in zip(
                killed, pool.map(restart, [handle] * len(killed), killed), strict=True
            ):
                print(f"{name}: {line}")
    assert report.planned == 2 * 2 * (6 + 4)
    assert report.lost == [] and report.early == []
    assert report.duplicates.get("kafka", 0) == 0, report.summary()
