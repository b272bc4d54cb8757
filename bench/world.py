"""The system under test: private topics and keyspace on the local stack, the four services as
processes (scheduler.testing.processes), an HTTP receiver and a read_committed consumer as
destinations, and one tenant with a REST app and a KAFKA app. Everything is removed on exit."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.testing.isolation import (
    delete_topic,
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.processes import System, group_env, running_system
from scheduler.testing.receiver import Arrivals, HttpReceiver, KafkaReceiver
from scheduler.testing.servers import Servers
from scheduler.topics import Topics
from tests.support.workload import App, create_app, create_control_key, create_topic

# Seconds-scale horizons (as the e2e tests): 1 s buckets, 4 s look-ahead, so a message due
# more than ~5 s ahead takes the long path: bucketer -> Cassandra -> releaser -> ring.
SCHEDULING = SchedulingSettings(
    bucket_width_ms=1_000,
    lookahead_ms=4_000,
    placement_margin_ms=1_000,
    ring_size=8,
    ring_slot_ms=2_000,
    cancel_guard_ms=200,
)
# The services' defaults (60 s buckets, 5 min look-ahead, 60 ring topics of a minute): the
# hotspot section runs a second world with them, where a message due 65 s ahead goes straight
# into its due-minute ring topic as in production.
PRODUCTION = SchedulingSettings()
DEST_PREFIX = "benchdest."
RECORDS_WAIT_S = 120  # a phase ends once the record writers have caught up, or after this


def settings_env(kafka: KafkaSettings) -> dict[str, str]:
    """Service settings the suite runs with (the report lists them)."""
    return {
        "SCHEDULER_INGEST_KAFKA_ENDPOINT_PREFIXES": json.dumps([DEST_PREFIX]),
        "SCHEDULER_DISPATCH_KAFKA_DESTINATION_PREFIXES": json.dumps([DEST_PREFIX]),
        # the benchmark is the only client: no per-key rate limit in the way
        "SCHEDULER_INGEST_RATE_PER_S": "1000000",
        "SCHEDULER_INGEST_RATE_BURST": "1000000",
        "SCHEDULER_INGEST_LOG_LEVEL": "WARNING",
        "SCHEDULER_RELEASE_SESSION_TIMEOUT_MS": "6000",
        # the suite schedules millions for one app (10 M with --with-10m): caps above that, so
        # nothing is refused, while their checks still run as in production
        "SCHEDULER_INGEST_MAX_PENDING_PER_APP": "100000000",
        "SCHEDULER_BUCKETER_MAX_PENDING_PER_APP": "100000000",
        # the launcher sets these itself; here so that the report lists them
        **group_env(kafka.topic_prefix),
    }


@dataclass
class World:
    system: System
    kafka: KafkaSettings
    cassandra: CassandraSettings
    scheduling: SchedulingSettings
    arrivals: Arrivals
    rest: App
    kafka_app: App
    dest_topic: str

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka, self.scheduling)

    def requests_end(self) -> int:
        """Records ever written to the requests topic (the sum of its end offsets)."""
        return self._end_offsets(self.topics.requests)

    def rejected_end(self) -> int:
        """Records ever written to the rejected topic (requests the services refused)."""
        return self._end_offsets(self.topics.rejected)

    def _end_offsets(self, topic: str) -> int:
        consumer = Consumer({**self.kafka.client_config(), "group.id": "bench-offsets"})
        try:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts
            )
        finally:
            consumer.close()

    def bucketer_lag(self) -> int:
        """Requests not yet stored by the bucketer (end offsets minus its committed offsets)."""
        return self._lag(self.topics.requests, self._bucketer_group_id)

    def bucketer_committed(self) -> int:
        """Requests the bucketer has stored or refused: the sum of its committed offsets. One
        question, so it never goes down (the end offsets minus the lag, asked apart, jumped
        back and forth by what the producer wrote in between)."""
        with self._group(self.topics.requests, self._bucketer_group_id) as (_, committed):
            return sum(max(tp.offset, 0) for tp in committed)

    def records_lag(self) -> int:
        """Results the record writers have not yet written (the results topic's ends, markers
        included, minus the writers' committed offsets; a writer commits past markers while
        idle, so this reaches 0)."""
        return self._lag(self.topics.results, f"{self.kafka.topic_prefix}record-writer")

    def wait_for_records(self, timeout_s: float = RECORDS_WAIT_S) -> bool:
        """Until the record writers have written every result (a phase's Cassandra writes and
        CPU are then its own, not the next phase's). False if they are still behind."""
        deadline = time.monotonic() + timeout_s
        while self.records_lag() > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    @property
    def _bucketer_group_id(self) -> str:
        return self.system.env["SCHEDULER_BUCKETER_GROUP_ID"]

    def _lag(self, topic: str, group_id: str) -> int:
        """The topic's end offsets minus the group's committed offsets."""
        with self._group(topic, group_id) as (consumer, committed):
            return sum(
                consumer.get_watermark_offsets(tp, timeout=10)[1] - max(tp.offset, 0)
                for tp in committed
            )

    @contextmanager
    def _group(self, topic: str, group_id: str) -> Iterator[tuple[Consumer, list[TopicPartition]]]:
        """A client in the group, and the group's committed offsets on the topic."""
        consumer = Consumer({**self.kafka.client_config(), "group.id": group_id})
        try:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in parts]
            yield consumer, consumer.committed(tps, timeout=10)
        finally:
            consumer.close()


def _delete_groups(kafka: KafkaSettings, extra: list[str]) -> None:
    """The services' consumer groups (under the private prefix) and the receiver's. A group
    still holding a kill -9'd member cannot be deleted until its session expires: the broker
    removes it later by itself (offsets retention), so that is only reported."""
    admin = AdminClient(kafka.client_config())
    listed = admin.list_consumer_groups(request_timeout=10).result()
    ours = [
        g.group_id
        for g in listed.valid
        if g.group_id.startswith(kafka.topic_prefix) or g.group_id in extra
    ]
    if ours:
        for group, future in admin.delete_consumer_groups(ours, request_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                print(f"[bench] consumer group {group} left in place: {exc}", file=sys.stderr)


def _best_effort(what: str, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    """A cleanup step whose failure is reported, and does not stop the others or the report."""

    def run() -> None:
        try:
            fn(*args)
        except Exception as exc:
            print(f"[bench] cleanup: {what} failed: {exc!r}", file=sys.stderr)

    return run


@contextmanager
def world(
    servers: Servers,
    logs: Path,
    partitions: int,
    scheduling: SchedulingSettings = SCHEDULING,
    dispatchers: int = 1,
) -> Iterator[World]:
    unique = unique_name()
    kafka = private_kafka(servers, unique).model_copy(
        update={
            "requests_partitions": partitions,
            "due_partitions": partitions,
            # as deployed: a transaction's results go to one of them (the record writer reads all)
            "results_partitions": KafkaSettings().results_partitions,
        }
    )
    cassandra = private_cassandra(servers, unique)
    dest_topic = f"{DEST_PREFIX}{unique}"
    groups: list[str] = []
    with ExitStack() as cleanup:
        # registered first, so it runs last: after the services stopped
        cleanup.callback(_best_effort("deleting consumer groups", _delete_groups, kafka, groups))
        cleanup.callback(_best_effort("dropping the keyspace", drop_keyspace, cassandra))
        cleanup.callback(_best_effort("deleting the topics", delete_topics, kafka))
        cleanup.callback(_best_effort("deleting the destination", delete_topic, kafka, dest_topic))
        system = cleanup.enter_context(
            running_system(kafka, cassandra, scheduling, logs, settings_env(kafka), dispatchers)
        )
        create_topic(kafka, dest_topic, partitions)
        arrivals = Arrivals()
        http = HttpReceiver(arrivals).start()
        cleanup.callback(http.close)
        consumer = KafkaReceiver(arrivals, kafka.bootstrap_servers, dest_topic).start()
        groups.append(consumer.group_id)
        cleanup.callback(consumer.close)
        control = create_control_key(system.env, f"bench-{uuid.uuid4().hex[:6]}@example.com")
        rest = create_app(system.ingest, control, "REST", http.url)
        cleanup.callback(rest.close)
        kafka_app = create_app(system.ingest, control, "KAFKA", dest_topic)
        cleanup.callback(kafka_app.close)
        yield World(system, kafka, cassandra, scheduling, arrivals, rest, kafka_app, dest_topic)
