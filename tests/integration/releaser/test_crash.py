"""kill -9 of the dispatcher process during a burst to a Kafka destination, then a restart:
a read_committed consumer sees every message exactly once (decision 6)."""

from __future__ import annotations

import collections
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from scheduler.store.ports import Application
from scheduler.testing.processes import System, service_env
from tests.support.processes import wait_for

from .conftest import CLOCK, Env
from .test_dispatch import create_topic, delete_topic, due_message

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def launcher(env: Env, logs: Path, extra: dict[str, str] | None = None) -> System:
    """The shared process launcher on this test's topics and keyspace (no ports: the test
    watches the destination, not the probes)."""
    return System(service_env(env.kafka, env.cassandra, env.scheduling, {}, extra), {}, logs)


def test_kill_9_during_a_kafka_burst_neither_loses_nor_duplicates(env: Env, tmp_path: Path) -> None:
    system = launcher(env, tmp_path)
    env.releaser_is_current()
    dest = f"dest-{uuid.uuid4().hex[:8]}"
    create_topic(env, dest)
    env.add_app(Application(app_id="k", owner_id="o", name="k", type="KAFKA", endpoint=dest))
    # Ready before the burst is due: a dispatcher that started after it (a slow start on a
    # loaded host) found all 2,000 overdue and delivered them in one go, leaving no window.
    system.start("dispatcher", wait=False)
    wait_for(
        "the dispatcher started",
        lambda: "settled attempts loaded" in system.log_text("dispatcher"),
        120,
    )
    now = CLOCK.now_ms()
    burst = [due_message("k", now + 3_000 + i * 2) for i in range(2_000)]  # 4 s of 500/s
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

    try:
        # kill -9 once deliveries are under way (the burst is half through)
        deadline = CLOCK.monotonic_ms() + 30_000
        while len(seen) < 500 and CLOCK.monotonic_ms() < deadline:
            read(CLOCK.monotonic_ms() + 100)
        assert 0 < len(seen) < len(burst), f"kill window missed: {len(seen)} delivered"
        system.kill9("dispatcher")
        killed_at = len(seen)
        system.restart("dispatcher", wait=False)
        deadline = CLOCK.monotonic_ms() + 60_000
        while len(seen) < len(burst) and CLOCK.monotonic_ms() < deadline:
            read(CLOCK.monotonic_ms() + 200)
        read(CLOCK.monotonic_ms() + 2_000)  # anything more (a duplicate) would show up now
        codes = system.stop("dispatcher")
        assert codes == {"dispatcher": 0}, system.log_text("dispatcher")[-3000:]
    finally:
        system.stop()  # a no-op unless an assertion above left one running
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

    env.add_app(Application(app_id="r", owner_id="o", name="r", type="REST", endpoint="http://x/"))
    now = CLOCK.now_ms()
    # overdue by the time the releaser runs: released at once, bucket after bucket
    stored = [due_message("r", now + 200 + i) for i in range(3_000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda m: store(env, m), stored))
    ids = {m.message_id for m in stored}
    system = launcher(
        env,
        tmp_path,
        {
            "SCHEDULER_RELEASE_SESSION_TIMEOUT_MS": "6000",
            "SCHEDULER_RELEASE_INITIAL_BACKFILL_MS": "20000",
        },
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

    def all_queued() -> bool:
        return all(
            env.stores.messages.get("r", m.message_id).state.status is Status.QUEUED for m in stored
        )

    system.start("releaser", wait=False)
    try:
        deadline = CLOCK.monotonic_ms() + 60_000
        while not in_ring and CLOCK.monotonic_ms() < deadline:
            read(50)
        assert in_ring, "the releaser produced nothing: " + system.log_text("releaser")[-2000:]
        system.kill9("releaser")
        killed_at = len(in_ring)
        system.restart("releaser", wait=False)
        deadline = CLOCK.monotonic_ms() + 90_000
        while set(in_ring) != ids and CLOCK.monotonic_ms() < deadline:
            read(200)
        deadline = CLOCK.monotonic_ms() + 30_000
        while not all_queued() and CLOCK.monotonic_ms() < deadline:
            read(500)
        codes = system.stop("releaser")
        assert codes == {"releaser": 0}, system.log_text("releaser")[-3000:]
    finally:
        system.stop()  # a no-op unless an assertion above left one running
        consumer.close()
    assert killed_at < len(ids), "the kill came after the whole release"
    assert set(in_ring) == ids, f"{len(ids - set(in_ring))} never reached the ring"
    assert all_queued()
    width = env.scheduling.bucket_width_ms
    for bucket in {m.due_ms - m.due_ms % width for m in stored}:
        assert env.stores.buckets.partitions(bucket) == []
