"""Bucketer benchmark: sustained throughput from scheduler.requests into Cassandra for long-horizon
messages, with one bucketer process, against the raw write ceiling of the same Cassandra for the
same rows (a plain driver loop at the best concurrency found). Prints the figures.

    .venv/bin/python bench/bucketer_bench.py [--messages 20000] [--batch-size 2000]
        [--max-pending N]

`--max-pending N` sets the bucketer's per-app pending cap to N, so all but the first N requests
are refused (`pending_limit_exceeded`): the rate of a producer flooding past its cap, which the
partitions it shares with other apps move at.

Uses a private topic prefix and keyspace (deleted afterwards) on the local stack. Targets
(issue 4): >= 5,000 msg/s, >= 0.6 of the ceiling. "Where the CPU goes" is reported as CPU
seconds per 1,000 messages of the bucketer process and of the Cassandra JVM(s), from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from cassandra.concurrent import execute_concurrent
from cassandra.query import BatchStatement, BatchType
from confluent_kafka import Consumer, Producer, TopicPartition

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.codec import RecordCodec
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.ids import new_message_id
from scheduler.domain.status import Status, precedence
from scheduler.records import ScheduleRequest
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.ports import Application
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.servers import resolve_servers
from scheduler.topics import Topics

CLOCK = SystemClock()
APP = "bench-app"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cassandra_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"CassandraDaemon" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def requests(n: int, now: int, scheduling: SchedulingSettings) -> list[ScheduleRequest]:
    # Long horizon: a day ahead, spread over 60 buckets of one app (8 shards each).
    return [
        ScheduleRequest(
            message_id=new_message_id(now),
            app_id=APP,
            payload_json='{"order": 12345, "action": "remind", "note": "bench payload"}',
            send_at_ms=now + 86_400_000 + (i % 60) * scheduling.bucket_width_ms + i % 997,
            created_ms=now,
            source="kafka",
        )
        for i in range(n)
    ]


def committed(kafka: KafkaSettings, topic: str, group: str) -> int:
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def run_bucketer(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    topics: Topics,
    n: int,
    batch_size: int,
    profile: Path | None = None,
    max_pending: int | None = None,
) -> dict[str, float]:
    group = f"bench-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEDULER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SCHEDULER_CASSANDRA_CONTACT_POINTS": json.dumps(cassandra.contact_points),
        "SCHEDULER_CASSANDRA_PORT": str(cassandra.port),
        "SCHEDULER_CASSANDRA_KEYSPACE": cassandra.keyspace,
        "SCHEDULER_CASSANDRA_CONSISTENCY": cassandra.consistency,
        "SCHEDULER_BUCKETER_GROUP_ID": group,
        "SCHEDULER_BUCKETER_METRICS_PORT": "0",
        "SCHEDULER_BUCKETER_BATCH_SIZE": str(batch_size),
        "SCHEDULER_BUCKETER_LOG_LEVEL": "WARNING",
    }
    if max_pending is not None:
        env["SCHEDULER_BUCKETER_MAX_PENDING_PER_APP"] = str(max_pending)
        env["SCHEDULER_BUCKETER_LOG_LEVEL"] = "ERROR"  # not a warning per refused request
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    process = subprocess.Popen(
        [sys.executable, *profiler, "-m", "scheduler_bucketer.main"], env=env
    )
    samples: list[tuple[float, int, float, float]] = []  # time, committed, cpu bucketer, cpu C*
    c_pids = cassandra_pids()
    try:
        while True:
            done = committed(kafka, topics.requests, group)
            c_cpu = sum(cpu_seconds(pid) for pid in c_pids)
            samples.append((time.monotonic(), done, cpu_seconds(process.pid), c_cpu))
            if done >= n or process.poll() is not None:
                break
            time.sleep(0.25)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    if samples[-1][1] < n:
        raise SystemExit(f"bucketer stopped early: {samples[-1][1]}/{n} committed")
    # Sustained rate: between 10 % and 100 % committed (start-up and group join excluded).
    start = next(s for s in samples if s[1] >= n // 10)
    end = samples[-1]
    span = end[0] - start[0]
    count = end[1] - start[1]
    return {
        "msg_per_s": count / span,
        "bucketer_cpu_per_1k": (end[2] - start[2]) / count * 1000,
        "cassandra_cpu_per_1k": (end[3] - start[3]) / count * 1000,
    }


def ceiling(
    cassandra: CassandraSettings, n: int, now: int, concurrency: int, per_batch: int
) -> float:
    """The same rows as the bucketer writes per long-horizon message, by a plain driver loop:
    one request per statement (per_batch 1) or unlogged batches of `per_batch` statements."""
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        p = session.prepare
        content = p(
            "INSERT INTO messages (app_id, message_id, payload_json, send_at_ms, created_ms,"
            " source) VALUES (?, ?, ?, ?, ?, ?)"
        )
        status = p(
            "UPDATE messages USING TIMESTAMP ? SET status = ?, generation = ?, attempt = ?,"
            " due_ms = ?, updated_ms = ?, lateness_ms = ?, last_http_status = ?,"
            " last_error = ?, log_entries[?] = ? WHERE app_id = ? AND message_id = ?"
        )
        listing = p(
            "INSERT INTO messages_by_app (app_id, day, created_ms, message_id) VALUES (?, ?, ?, ?)"
        )
        day = p("INSERT INTO app_message_days (app_id, day) VALUES (?, ?)")
        row = p(
            "INSERT INTO due_by_bucket (bucket_ms, app_id, shard, due_ms, message_id, generation,"
            " attempt, send_at_ms, created_ms, payload_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        index = p("INSERT INTO bucket_partitions (bucket_ms, app_id, shard) VALUES (?, ?, ?)")
        stamp = precedence(Status.READY, 0, 1)
        payload = '{"order": 12345, "action": "remind", "note": "bench payload"}'

        def statements() -> Iterator[tuple[object, tuple[object, ...]]]:
            seen: set[tuple[int, int]] = set()
            for i in range(n):
                mid = new_message_id(now)
                due = now + 86_400_000 + (i % 60) * 60_000 + i % 997
                bucket, shard = bucket_start(due, 60_000), shard_of(mid, 8)
                yield content, (APP, mid, payload, due, now, "kafka")
                entry = ((now, "0:1:scheduled:stored"), ("READY", "{}"))
                yield status, (stamp, "READY", 0, 1, due, now, None, None, None, *entry, APP, mid)
                yield listing, (APP, now // 86_400_000, now, mid)
                yield day, (APP, now // 86_400_000)
                yield row, (bucket, APP, shard, due, mid, 0, 1, due, now, payload)
                if (bucket, shard) not in seen:
                    seen.add((bucket, shard))
                    yield index, (bucket, APP, shard)

        def requests() -> Iterator[tuple[object, tuple[object, ...] | None]]:
            if per_batch == 1:
                yield from statements()
                return
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for prepared, params in statements():
                batch.add(prepared, params)
                if len(batch) >= per_batch:
                    yield batch, None
                    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            if len(batch):
                yield batch, None

        started = time.monotonic()
        for success, result in execute_concurrent(
            session, requests(), concurrency=concurrency, results_generator=True
        ):
            if not success:
                raise result
        return n / (time.monotonic() - started)
    finally:
        cluster.shutdown()


def measure_ceilings(cassandra: CassandraSettings, n: int, now: int, when: str) -> float:
    best = 0.0
    for per_batch, concurrency in ((1, 64), (1, 256), (50, 32), (50, 64), (100, 32)):
        rate = ceiling(cassandra, n, now, concurrency, per_batch)
        how = "one request per statement" if per_batch == 1 else f"batches of {per_batch}"
        print(
            f"raw driver loop ({when}), same rows, {how}, {concurrency} in flight:"
            f" {rate:,.0f} msg/s"
        )
        best = max(best, rate)
    return best


def consume_rate_confluent(kafka: KafkaSettings, topic: str, n: int) -> float:
    codec = RecordCodec(ScheduleRequest)
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"bench-c-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen, started = 0, None
    try:
        while seen < n:
            messages = consumer.consume(2_000, 1.0)
            if messages and started is None:
                started = time.monotonic()
            for message in messages:
                if message.error() is None:
                    codec.decode(message.value() or b"")
                    seen += 1
        return n / (time.monotonic() - (started or time.monotonic()))
    finally:
        consumer.close()


async def consume_rate_aiokafka(kafka: KafkaSettings, topic: str, n: int) -> float:
    codec = RecordCodec(ScheduleRequest)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"bench-a-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1_000, max_records=2_000)
            if batches and started is None:
                started = time.monotonic()
            for records in batches.values():
                for record in records:
                    codec.decode(record.value or b"")
                    seen += 1
        return n / (time.monotonic() - (started or time.monotonic()))
    finally:
        await consumer.stop()


def consume_rate_faust(kafka: KafkaSettings, topic: str, n: int) -> float:
    """A faust agent that decodes each event (no writes), in its own process (faust owns the
    event loop and the command line), with its data directory in a temporary folder."""
    with tempfile.TemporaryDirectory() as datadir:
        out = subprocess.run(
            [sys.executable, __file__, "--faust-agent", kafka.bootstrap_servers, topic, str(n)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=datadir,
            check=False,
        )
    for line in out.stdout.splitlines() + out.stderr.splitlines():
        words = line.split()
        if "FAUST_RATE" in words:
            return float(words[words.index("FAUST_RATE") + 1])
    raise RuntimeError(f"the faust agent did not report a rate: {out.stderr[-2000:]}")


def faust_agent(bootstrap: str, topic: str, n: int) -> None:
    import faust  # only in this mode: faust patches the event loop on import

    codec = RecordCodec(ScheduleRequest)
    app = faust.App(
        f"bench-faust-{os.getpid()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        datadir=os.getcwd(),
    )
    source = app.topic(topic, value_type=bytes, value_serializer="raw")
    state: dict[str, float] = {"seen": 0}

    @app.agent(source)
    async def decode(stream: Any) -> None:
        async for value in stream:
            state.setdefault("start", time.monotonic())
            codec.decode(value)
            state["seen"] += 1
            if state["seen"] >= n:
                print(f"FAUST_RATE {n / (time.monotonic() - state['start']):.0f}", flush=True)
                os._exit(0)  # the figure is out; no need for a graceful faust shutdown

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--faust-agent":
        faust_agent(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the bucketer process")
    parser.add_argument(
        "--max-pending", type=int, help="the per-app pending cap (all beyond it are refused)"
    )
    args = parser.parse_args()
    unique = unique_name()
    servers = resolve_servers()
    kafka = private_kafka(servers, unique).model_copy(update={"requests_partitions": 4})
    cassandra = private_cassandra(servers, unique)
    scheduling = SchedulingSettings()
    topics = Topics(kafka, scheduling)
    setup(kafka, cassandra, scheduling)
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    CassandraAppStore(session).put_app(
        Application(app_id=APP, owner_id="bench", name=APP, type="REST", endpoint="http://x/")
    )
    cluster.shutdown()
    try:
        now = CLOCK.now_ms()
        codec = RecordCodec(ScheduleRequest)
        producer = Producer({**kafka.client_config(), "linger.ms": 20, "acks": "all"})
        for request in requests(args.messages, now, scheduling):
            while True:
                try:
                    producer.produce(topics.requests, codec.encode(request), APP.encode())
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(60)
        print(f"{args.messages} long-horizon requests in {topics.requests}")

        # The raw ceiling before and after the bucketer run (the shared host's load moves), the
        # best of all as the ceiling.
        best = measure_ceilings(cassandra, args.messages // 2, now, "before")
        profile = Path(f"/tmp/bucketer-{unique}.prof") if args.profile else None
        result = run_bucketer(
            kafka, cassandra, topics, args.messages, args.batch_size, profile, args.max_pending
        )
        over = ""
        if args.max_pending is not None:
            over = f", all after the first {args.max_pending} refused"
        print(
            f"bucketer: {result['msg_per_s']:,.0f} msg/s sustained"
            f" (batch {args.batch_size}{over}); CPU per 1,000 msg: bucketer"
            f" {result['bucketer_cpu_per_1k']:.2f} s, Cassandra"
            f" {result['cassandra_cpu_per_1k']:.2f} s"
        )
        best = max(best, measure_ceilings(cassandra, args.messages // 2, now, "after"))
        print(f"ratio bucketer / ceiling: {result['msg_per_s'] / best:.2f}")
        print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        rate_confluent = consume_rate_confluent(kafka, topics.requests, args.messages)
        rate_aiokafka = asyncio.run(consume_rate_aiokafka(kafka, topics.requests, args.messages))
        rate_faust = consume_rate_faust(kafka, topics.requests, args.messages)
        print(
            f"consume + decode only, no writes: confluent-kafka {rate_confluent:,.0f} msg/s,"
            f" aiokafka (faust's client) {rate_aiokafka:,.0f} msg/s,"
            f" faust agent {rate_faust:,.0f} msg/s"
        )
        if profile:
            stats = pstats.Stats(str(profile))
            print("bucketer CPU by function (cProfile, top 20 by own time):")
            stats.sort_stats("tottime").print_stats(20)
    finally:
        delete_topics(kafka)
        drop_keyspace(cassandra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
