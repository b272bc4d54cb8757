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
from confluent_kafka import Consumer

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


def test_kill_9_of_the_releaser_mid_bucket_loses_nothing(env: Env, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from scheduler.domain.status import Status

    from .test_release import store

    log = tmp_path / "releaser.log"
    env.add_app(Application(app_id="r", owner_id="o", name="r", type="REST", endpoint="http://x/"))
    now = CLOCK.now_ms()
    # overdue by the time the releaser runs: released at once, bucket after bucket
    stored = [due_message("r", now + 200 + i) for i in range(3_000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda m: store(env, m), stored))
    ids = {m.message_id for m in stored}
    process_env = {
        **service_env(env.kafka, env.cassandra, env.scheduling),
        "SCHEDULER_RELEASE_METRICS_PORT": "0",
        "SCHEDULER_RELEASE_TICK_MS": "200",
        "SCHEDULER_RELEASE_SESSION_TIMEOUT_MS": "6000",
        "SCHEDULER_RELEASE_INITIAL_BACKFILL_MS": "20000",
    }

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "scheduler_releaser.release_main"],
                env=process_env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    consumer = Consumer(
        {
            **env.kafka.client_config(),
            "group.id": f"{env.kafka.topic_prefix}ring-reader",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(env.topics.ring.topics())
    in_ring: collections.Counter[str] = collections.Counter()

    def read(for_ms: int) -> None:
        end = CLOCK.monotonic_ms() + for_ms
        while CLOCK.monotonic_ms() < end:
            for msg in consumer.consume(1000, timeout=0.1):
                if msg.error() is None:
                    in_ring[msg.key().decode()] += 1

    first = start()
    try:
        deadline = CLOCK.monotonic_ms() + 60_000
        while not in_ring and CLOCK.monotonic_ms() < deadline:
            read(50)
        assert in_ring, "the releaser produced nothing: " + log.read_text()[-2000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = len(in_ring)
        second = start()
        try:
            deadline = CLOCK.monotonic_ms() + 90_000
            while set(in_ring) != ids and CLOCK.monotonic_ms() < deadline:
                read(200)

            def all_queued() -> bool:
                return all(
                    env.stores.messages.get("r", m.message_id).state.status is Status.QUEUED
                    for m in stored
                )

            deadline = CLOCK.monotonic_ms() + 30_000
            while not all_queued() and CLOCK.monotonic_ms() < deadline:
                read(500)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
        consumer.close()
    assert killed_at < len(ids), "the kill came after the whole release"
    assert set(in_ring) == ids, f"{len(ids - set(in_ring))} never reached the ring"
    assert all_queued()
    width = env.scheduling.bucket_width_ms
    for bucket in {m.due_ms - m.due_ms % width for m in stored}:
        assert env.stores.buckets.partitions(bucket) == []
