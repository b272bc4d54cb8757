"""The e2e harness: private topics and keyspace, the four services as processes, a tenant with a
REST app (to a local HTTP receiver) and a KAFKA app (read by a read_committed consumer)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.testing.isolation import (
    delete_topic,
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.servers import Servers
from tests.support.ledger import Ledger, Report
from tests.support.processes import System, running_system, wait_for
from tests.support.receiver import Arrivals, HttpReceiver, KafkaReceiver
from tests.support.shrunk import DEST_PREFIX, EXTRA_ENV, SCHEDULING
from tests.support.workload import App, create_app, create_control_key, create_topic

GRACE_S = 2.0  # after the last arrival: time for a late duplicate to show


def private_settings(servers: Servers) -> tuple[KafkaSettings, CassandraSettings]:
    """Topics and keyspace of this run only, on `servers` (scheduler.testing.isolation)."""
    unique = unique_name()
    return private_kafka(servers, unique), private_cassandra(servers, unique)


@dataclass
class World:
    """A running system plus its destinations and a tenant with one app of each kind."""

    system: System
    kafka: KafkaSettings
    cassandra: CassandraSettings
    scheduling: SchedulingSettings
    arrivals: Arrivals
    rest: App
    kafka_app: App
    control_key: str = ""  # the tenant's, to create more apps
    receiver_url: str = ""  # the HTTP receiver the REST app delivers to

    def control(self, app: App, action: str) -> None:
        """PUT /applications/{id}/{action} with the tenant's control key (pause, resume)."""
        answer = httpx.put(
            f"{self.system.ingest}/applications/{app.app_id}/{action}",
            headers={"Authorization": f"Token {self.control_key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

    def wait_delivered(self, ledger: Ledger, timeout_s: float) -> Report:
        """Wait until every planned message arrived (bounded), then a short grace period for
        late duplicates; returns the report (the caller asserts on it)."""
        try:
            wait_for(
                f"{len(ledger)} deliveries",
                lambda: set(ledger.planned) <= self.arrivals.ids(),
                timeout_s,
            )
        except AssertionError:
            report = ledger.report(self.arrivals.snapshot())
            print(self.system.tail())
            print(self.dispatcher_metrics())
            lost_by = Counter(ledger.planned[m].destination for m in report.lost)
            raise AssertionError(
                f"not all delivered: {report.summary()}; lost by destination {dict(lost_by)}"
            ) from None
        time.sleep(GRACE_S)
        return ledger.report(self.arrivals.snapshot())

    def dispatcher_metrics(self) -> str:
        """The dispatcher's own view (attempts, held, lag), for a failure message."""
        try:
            text = httpx.get(self.system.url("dispatcher", "/metrics"), timeout=5).text
        except httpx.HTTPError as exc:
            return f"dispatcher metrics unavailable: {exc}"
        keep = ("attempts_total", "held_messages", "ring_lag", "in_flight", "skipped_total")
        return "\n".join(
            line
            for line in text.splitlines()
            if not line.startswith("#") and any(k in line for k in keep)
        )


@contextmanager
def world(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    logs: Path,
    extra: dict[str, str] | None = None,
) -> Iterator[World]:
    """Everything of one e2e module: topics, keyspace, services, receivers, one tenant."""
    dest_topic = f"{DEST_PREFIX}{kafka.topic_prefix}out"
    try:
        with running_system(
            kafka, cassandra, SCHEDULING, logs, {**EXTRA_ENV, **(extra or {})}
        ) as system:
            # as replicated as the system's own topics (a cluster: RF 3, a broker may die)
            create_topic(kafka, dest_topic, replication_factor=kafka.replication_factor)
            arrivals = Arrivals()
            http = HttpReceiver(arrivals).start()
            consumer = KafkaReceiver(arrivals, kafka.bootstrap_servers, dest_topic).start()
            control = create_control_key(system.env, f"e2e-{uuid.uuid4().hex[:6]}@example.com")
            rest = create_app(system.ingest, control, "REST", http.url)
            kafka_app = create_app(system.ingest, control, "KAFKA", dest_topic)
            try:
                yield World(
                    system,
                    kafka,
                    cassandra,
                    SCHEDULING,
                    arrivals,
                    rest,
                    kafka_app,
                    control,
                    http.url,
                )
            finally:
                rest.close()
                kafka_app.close()
                consumer.close()
                http.close()
    finally:
        delete_topics(kafka)
        delete_topic(kafka, dest_topic)
        drop_keyspace(cassandra)


@pytest.fixture(scope="session")
def shared_world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One system for the session on the shared stack (private topics and keyspace): the flow,
    kill -9 and soak tests use it in turn (each with its own messages)."""
    kafka, cassandra = private_settings(servers)
    with world(kafka, cassandra, tmp_path_factory.mktemp("e2e")) as w:
        yield w
