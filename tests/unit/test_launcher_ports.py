"""The process launcher gives every process its own ports, ingest its metrics port too.

Ingest serves /metrics on SCHEDULER_INGEST_METRICS_PORT (default 9101): a launched ingest left
on the default would collide with `make up`'s or another test's, and a second ingest replica
with the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.testing.processes import System, service_env

pytestmark = pytest.mark.unit


def test_ingest_and_its_replicas_get_metrics_ports_of_their_own(tmp_path: Path) -> None:
    ports = System.ports_for()
    env = service_env(
        KafkaSettings(topic_prefix="t."), CassandraSettings(), SchedulingSettings(), ports
    )
    assert env["SCHEDULER_INGEST_METRICS_PORT"] == str(ports["ingest:metrics"])
    system = System(env, ports, tmp_path)
    system.add_replica("ingest", "ingest-2")
    second = system.env_for("ingest-2")
    assert second["SCHEDULER_INGEST_METRICS_PORT"] == str(ports["ingest-2:metrics"])
    used = [v for k, v in second.items() if k.endswith("PORT")]
    assert len(used) == len(set(used)), "no port shared within one process"
    assert system.metrics_url("ingest") == f"http://127.0.0.1:{ports['ingest:metrics']}/metrics"
    assert system.metrics_url("bucketer") == system.url("bucketer", "/metrics")
    assert ports["ingest:metrics"] != ports["ingest-2:metrics"]


def test_a_subset_without_ingest_serves_no_ingest_metrics() -> None:
    ports = System.ports_for(["dispatcher"])
    env = service_env(
        KafkaSettings(topic_prefix="t."), CassandraSettings(), SchedulingSettings(), ports
    )
    assert env["SCHEDULER_INGEST_METRICS_PORT"] == "0"
