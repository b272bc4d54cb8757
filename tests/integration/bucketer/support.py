"""Helpers for the bucketer's integration tests: a wired local stack, a bucketer in a thread or
a subprocess, Kafka input and output, Cassandra inspection."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cassandra.cluster import Session
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.codec import RecordCodec
from scheduler.domain.ids import new_message_id
from scheduler.encryption import PLAIN, ColumnCipher
from scheduler.records import Command, DueMessage, RejectedRequest, ScheduleRequest
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import Application
from scheduler.topics import Topics
from scheduler_bucketer.main import run
from scheduler_bucketer.metrics import BucketerMetrics
from scheduler_bucketer.settings import BucketerSettings

APP_ID = "app-it"
REQUESTS = RecordCodec(ScheduleRequest)
COMMANDS = RecordCodec(Command)
DUE = RecordCodec(DueMessage)
REJECTED = RecordCodec(RejectedRequest)
CLOCK = SystemClock()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Stack:
    kafka: KafkaSettings
    cassandra: CassandraSettings
    scheduling: SchedulingSettings
    session: Session  # bound to the test keyspace
    topics: Topics
    group_id: str

    @property
    def messages(self) -> CassandraMessageStore:
        return CassandraMessageStore(self.session)

    def request(self, send_at_ms: int, app_id: str = APP_ID) -> ScheduleRequest:
        now = CLOCK.now_ms()
        return ScheduleRequest(
            message_id=new_message_id(now),
            app_id=app_id,
            payload_json='{"hello": "world"}',
            send_at_ms=send_at_ms,
            created_ms=now,
            source="kafka",
        )

    def produce(
        self, values: list[bytes], topic: str | None = None, key: bytes = APP_ID.encode()
    ) -> None:
        producer = Producer({**self.kafka.client_config(), "acks": "all", "linger.ms": 5})
        for value in values:
            producer.produce(topic or self.topics.requests, value=value, key=key)
        assert producer.flush(30) == 0

    def produce_requests(self, requests: list[ScheduleRequest]) -> None:
        self.produce([REQUESTS.encode(r) for r in requests])

    def stored_ids(self) -> list[str]:
        """Every stored row's message id (a full scan: fine for a test keyspace)."""
        return [
            row.message_id for row in self.session.execute("SELECT message_id FROM due_by_bucket")
        ]

    def read_topics(self, topics: list[str], expected: int, timeout_s: float = 30.0) -> list[bytes]:
        """Values of the given topics from the beginning, until `expected` arrived (then 1 s more
        to catch unexpected extras)."""
        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(topics)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        extra_until: float | None = None
        try:
            while time.monotonic() < deadline:
                if extra_until is not None and time.monotonic() > extra_until:
                    break
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                values.append(message.value() or b"")
                if len(values) >= expected and extra_until is None:
                    extra_until = time.monotonic() + 1.0
        finally:
            consumer.close()
        return values

    def ring_messages(self, expected: int, timeout_s: float = 30.0) -> list[DueMessage]:
        values = self.read_topics(self.topics.ring.topics(), expected, timeout_s)
        return [DUE.decode(v) for v in values]

    def rejections(self, expected: int) -> list[RejectedRequest]:
        return [REJECTED.decode(v) for v in self.read_topics([self.topics.rejected], expected)]

    def committed_everything(self) -> bool:
        """Has the bucketer's group committed up to the end of every input partition?"""
        consumer = Consumer({**self.kafka.client_config(), "group.id": self.group_id})
        try:
            partitions = []
            for topic in (self.topics.requests, self.topics.commands):
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                partitions += [TopicPartition(topic, p) for p in meta.partitions]
            committed = consumer.committed(partitions, timeout=10)
            for tp in committed:
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > 0 and tp.offset < high:
                    return False
            return True
        finally:
            consumer.close()

    def bucketer_settings(self, **overrides: object) -> BucketerSettings:
        fields = {"group_id": self.group_id, "metrics_port": 0, "poll_timeout_s": 0.2}
        return BucketerSettings.model_validate({**fields, **overrides})

    @contextlib.contextmanager
    def bucketer_thread(
        self,
        cassandra: CassandraSettings | None = None,
        cipher: ColumnCipher = PLAIN,
        **overrides: object,
    ) -> Iterator[BucketerMetrics]:
        """A bucketer running in this process until the block ends (then stopped gracefully)."""
        metrics = BucketerMetrics(CollectorRegistry())
        stop = threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            try:
                run(
                    self.bucketer_settings(**overrides),
                    self.kafka,
                    cassandra or self.cassandra,
                    self.scheduling,
                    metrics,
                    stop,
                    cipher=cipher,
                )
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="bucketer", daemon=True)
        thread.start()
        try:
            yield metrics
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive(), "the bucketer did not stop"
        assert not errors, errors

    def bucketer_process(self, log_path: str, **overrides: object) -> subprocess.Popen[bytes]:
        """`python -m scheduler_bucketer.main` configured for this test through the environment."""
        env = {
            **os.environ,
            "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "SCHEDULER_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            "SCHEDULER_CASSANDRA_CONTACT_POINTS": json.dumps(self.cassandra.contact_points),
            "SCHEDULER_CASSANDRA_PORT": str(self.cassandra.port),
            "SCHEDULER_CASSANDRA_KEYSPACE": self.cassandra.keyspace,
            "SCHEDULER_CASSANDRA_CONSISTENCY": self.cassandra.consistency,
            "SCHEDULER_BUCKET_WIDTH_MS": str(self.scheduling.bucket_width_ms),
            "SCHEDULER_LOOKAHEAD_MS": str(self.scheduling.lookahead_ms),
            "SCHEDULER_PLACEMENT_MARGIN_MS": str(self.scheduling.placement_margin_ms),
            "SCHEDULER_RING_SIZE": str(self.scheduling.ring_size),
            "SCHEDULER_RING_SLOT_MS": str(self.scheduling.ring_slot_ms),
            "SCHEDULER_BUCKETER_GROUP_ID": self.group_id,
            "SCHEDULER_BUCKETER_METRICS_PORT": "0",
            "SCHEDULER_BUCKETER_POLL_TIMEOUT_S": "0.2",
        }
        env.update({f"SCHEDULER_BUCKETER_{k.upper()}": str(v) for k, v in overrides.items()})
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "scheduler_bucketer.main"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def make_stack(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    scheduling: SchedulingSettings,
    session: Session,
) -> Stack:
    setup(kafka, cassandra, scheduling)
    session.set_keyspace(cassandra.keyspace)
    apps = CassandraAppStore(session)
    for app_id, deleted in ((APP_ID, None), ("app-deleted", 1)):
        apps.put_app(
            Application(
                app_id=app_id,
                owner_id="owner-it",
                name=app_id,
                type="REST",
                endpoint="http://127.0.0.1:9/hook",
                deleted_ms=deleted,
            )
        )
    return Stack(
        kafka=kafka,
        cassandra=cassandra,
        scheduling=scheduling,
        session=session,
        topics=Topics(kafka, scheduling),
        group_id=f"bucketer-{uuid.uuid4().hex[:8]}",
    )
