"""kill -9 of the dispatcher process during a burst to a Kafka destination, then a restart:
a read_committed consumer sees every message exactly once (decision 6)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.ports import Application

from .conftest import CLOCK, Env
from .test_dispatch import create_topic, delete_topic, due_message

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def service_env(
    kafka: KafkaSettings, cassandra: CassandraSettings, s: SchedulingSettings
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SCHEDULER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SCHEDULER_KAFKA_REPLICATION_FACTOR": str(kafka.replication_factor),
            "SCHEDULER_KAFKA_MIN_INSYNC_REPLICAS": str(kafka.min_insync_replicas),
            "SCHEDULER_KAFKA_COMMANDS_PARTITIONS": str(kafka.commands_partitions),
            "SCHEDULER_CASSANDRA_CONTACT_POINTS": json.dumps(cassandra.contact_points),
            "SCHEDULER_CASSANDRA_PORT": str(cassandra.port),
            "SCHEDULER_CASSANDRA_KEYSPACE": cassandra.keyspace,
            "SCHEDULER_CASSANDRA_REPLICATION_FACTOR": str(cassandra.replication_factor),
            "SCHEDULER_CASSANDRA_CONSISTENCY": cassandra.consistency,
            "SCHEDULER_BUCKET_WIDTH_MS": str(s.bucket_width_ms),
            "SCHEDULER_LOOKAHEAD_MS": str(s.lookahead_ms),
            "SCHEDULER_PLACEMENT_MARGIN_MS": str(s.placement_margin_ms),
            "SCHEDULER_RING_SIZE": str(s.ring_size),
            "SCHEDULER_RING_SLOT_MS": str(s.ring_slot_ms),
            "SCHEDULER_CANCEL_GUARD_MS": str(s.cancel_guard_ms),
            "SCHEDULER_DISPATCH_METRICS_PORT": "0",
            "SCHEDULER_DISPATCH_ALLOW_PRIVATE_DESTINATIONS": "true",
        }
    )
    return env


def start_dispatcher(env: Env, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler_releaser.dispatch_main"],
            env=service_env(env.kafka, env.cassandra, env.scheduling),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def test_kill_9_during_a_kafka_burst_neither_loses_nor_duplicates(env: Env, tmp_path: Path) -> None:
    log = tmp_path / "dispatcher.log"
    env.releaser_is_current()
    dest = f"dest-{uuid.uuid4().hex[:8]}"
    create_topic(env, dest)
    env.add_app(Application(app_id="k", owner_id="o", name="k", type="KAFKA", endpoint=dest))
    now = CLOCK.now_ms()
    burst = [due_message("k", now + 2_000 + i * 2) for i in range(2_000)]  # 4 s of 500/s
    for m in burst:  # ring records only: the record check lets a missing record fire
        env.producer.produce(
            env.topics.ring.topic_for(m.due_ms),
            key=m.message_id.encode(),
            value=env.codecs.due.encode(m),
        )
    env.flush()
    consumer = env.consumer(dest, "verify")
    seen: collections.Counter[str] = collections.Counter()

    def read(until_ms: int) -> None:
        while CLOCK.monotonic_ms() < until_ms:
            for msg in consumer.consume(500, timeout=0.1):
                if msg.error() is None:
                    seen[msg.key().decode()] += 1

    first = start_dispatcher(env, log)
    try:
        # kill -9 once deliveries are under way (the burst is half through)
        deadline = CLOCK.monotonic_ms() + 30_000
        while len(seen) < 500 and CLOCK.monotonic_ms() < deadline:
            read(CLOCK.monotonic_ms() + 100)
        assert 0 < len(seen) < len(burst), f"kill window missed: {len(seen)} delivered"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = len(seen)
        second = start_dispatcher(env, log)
        try:
            deadline = CLOCK.monotonic_ms() + 60_000
            while len(seen) < len(burst) and CLOCK.monotonic_ms() < deadline:
                read(CLOCK.monotonic_ms() + 200)
            read(CLOCK.monotonic_ms() + 2_000)  # anything more (a duplicate) would show up now
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, (second.stderr.read() if second.stderr else b"").decode()[
                -3000:
            ]
    finally:
        if first.poll() is None:
            first.kill()
        consumer.close()
        delete_topic(env, dest)
    assert killed_at < len(burst)
    missing = {m.message_id for m in burst} - set(seen)
    assert not missing, f"{len(missing)} lost"
    duplicated = {k: n for k, n in seen.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} duplicated"
