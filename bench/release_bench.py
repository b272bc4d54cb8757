"""Releaser benchmark: a first start, a catch-up over an empty outage, and the release rate with
N messages stored, against the real local Kafka and Cassandra. Prints the figures.

    .venv/bin/python bench/release_bench.py [--runs 3] [--stored 1000,10000,50000]

- first start: `run_releaser` on a new keyspace (index complete, no watermark) after its stores
  are connected; time until its health says "leading" (lease joined, ring producer initialised,
  first tick done).
- empty outage: the watermark 7 days behind, nothing stored; the ticks until it is current
  (claim, index read, advance), with production buckets (60 s) and the local profile's (5 s).
  Beside it, for 60 s buckets, the same catch-up walking every bucket, as the releaser does while
  an upgraded keyspace's index is incomplete (the previous version's walk, without its
  per-bucket conditional write).
- N stored: N messages spread over 100 buckets (800 partitions) of the outage, then the ticks
  that release them all through the transactional ring producer (`--buckets 1`: all in one
  bucket, the midnight hotspot; `--profile FILE`: cProfile of the releases).

Uses a private topic prefix and keyspace (deleted afterwards). Medians of `--runs` runs with
min and max.
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from cassandra.cluster import Session
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.ids import new_message_id
from scheduler.ops import Health
from scheduler.records import DueMessage
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import Application
from scheduler.testing.fakes import InMemoryApps
from scheduler.testing.isolation import (
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.servers import resolve_servers
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.metrics import ReleaseMetrics
from scheduler_releaser.releaser.core import Releaser
from scheduler_releaser.releaser.runtime import KafkaRingPublisher, run_releaser
from scheduler_releaser.settings import ReleaseSettings

CLOCK = SystemClock()
DAY_MS = 86_400_000
OUTAGE_MS = 7 * DAY_MS
PRODUCTION = SchedulingSettings()  # 60 s buckets, 5 min look-ahead
LOCAL = SchedulingSettings(
    bucket_width_ms=5_000, lookahead_ms=15_000, placement_margin_ms=5_000, ring_slot_ms=5_000
)
APP = "bench-app"


def reset_release_state(session: Session, *, watermark_ms: int | None, indexed: bool) -> None:
    """Back to a chosen release state: the watermark (none: a new installation), no claim."""
    session.execute("TRUNCATE release_watermark")
    session.execute("TRUNCATE stored_buckets")
    session.execute("TRUNCATE stored_days")
    rows = [("bucket_index", 0)] if indexed else []
    if watermark_ms is not None:
        rows.append(("global", watermark_ms))
    for name, value in rows:
        session.execute(
            "INSERT INTO release_watermark (name, released_up_to_ms, updated_ms)"
            " VALUES (%s, %s, %s)",
            (name, value, CLOCK.now_ms()),
        )


def first_start(kafka: KafkaSettings, scheduling: SchedulingSettings, session: Session) -> float:
    """Seconds from run_releaser's start (stores connected) to its first "leading" report."""
    reset_release_state(session, watermark_ms=None, indexed=True)
    stores = CassandraBucketStore(session)
    health, stop = Health(CLOCK), threading.Event()
    started = time.monotonic()
    thread = threading.Thread(
        target=run_releaser,
        kwargs={
            "kafka": kafka,
            "scheduling": scheduling,
            "settings": ReleaseSettings(metrics_port=0, session_timeout_ms=6_000),
            "buckets": stores,
            "messages": CassandraMessageStore(session),
            "apps": InMemoryApps(),
            "clock": CLOCK,
            "metrics": ReleaseMetrics(CollectorRegistry()),
            "stop": stop,
            "health": health,
        },
        daemon=True,
    )
    thread.start()
    try:
        while health.ready() != (True, "leading"):
            if time.monotonic() - started > 60:
                raise TimeoutError(f"releaser not leading after 60 s: {health.ready()}")
            time.sleep(0.01)
        return time.monotonic() - started
    finally:
        stop.set()
        thread.join(30)


class Bench:
    def __init__(self, kafka: KafkaSettings, session: Session) -> None:
        self.kafka = kafka
        self.session = session
        self.buckets = CassandraBucketStore(session)
        self.messages = CassandraMessageStore(session)
        topics = Topics(kafka, PRODUCTION)
        config = {
            **kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "transactional.id": f"{kafka.topic_prefix}release-bench",
        }
        self.publisher = KafkaRingPublisher(lambda: Producer(config), topics, Codecs.build(kafka))
        self.publisher.start()
        self.writers = ThreadPoolExecutor(16)

    def releaser(self, scheduling: SchedulingSettings, metrics: ReleaseMetrics) -> Releaser:
        return Releaser(
            clock=CLOCK,
            scheduling=scheduling,
            buckets=self.buckets,
            messages=self.messages,
            apps=InMemoryApps(
                Application(APP, "bench", "bench", "REST", "http://127.0.0.1:9/bench")
            ),
            publisher=self.publisher,
            writers=self.writers,
            metrics=metrics,
            initial_backfill_ms=DAY_MS,
        )

    def catch_up(self, scheduling: SchedulingSettings) -> tuple[float, int]:
        """Seconds of the ticks until the watermark reaches now + look-ahead (a tick stops at
        its budget, 5 s), and the messages they released."""
        metrics = ReleaseMetrics(CollectorRegistry())
        releaser = self.releaser(scheduling, metrics)
        started = time.monotonic()
        while True:
            releaser.tick()
            if self.buckets.watermark() >= CLOCK.now_ms() + scheduling.lookahead_ms:
                return time.monotonic() - started, int(metrics.released._value.get())

    def empty_outage(self, scheduling: SchedulingSettings, indexed: bool) -> float:
        watermark = bucket_start(CLOCK.now_ms() - OUTAGE_MS, scheduling.bucket_width_ms)
        reset_release_state(self.session, watermark_ms=watermark, indexed=indexed)
        return self.catch_up(scheduling)[0]

    def stored(
        self, count: int, buckets: int, profiler: cProfile.Profile | None = None
    ) -> tuple[float, int]:
        width = PRODUCTION.bucket_width_ms
        start = bucket_start(CLOCK.now_ms() - OUTAGE_MS, width)
        reset_release_state(self.session, watermark_ms=start, indexed=True)
        step = (OUTAGE_MS - DAY_MS) // buckets // width * width  # spread over the outage
        items = []
        for i in range(count):
            due = start + (i % buckets) * step + i % width
            message_id = new_message_id(CLOCK.now_ms())
            message = DueMessage(
                message_id=message_id,
                app_id=APP,
                generation=0,
                attempt=1,
                due_ms=due,
                send_at_ms=due,
                created_ms=due - DAY_MS,
                payload_json='{"order": 1234, "note": "a payload of a typical size"}',
            )
            items.append((bucket_start(due, width), shard_of(message_id, 8), message))
        for i in range(0, len(items), 20_000):  # a partition's rows go in one batch
            self.buckets.store_many(items[i : i + 20_000])
        if profiler is None:
            return self.catch_up(PRODUCTION)
        profiler.enable()
        try:
            return self.catch_up(PRODUCTION)
        finally:
            profiler.disable()

    def close(self) -> None:
        self.publisher.close()
        self.writers.shutdown()


def summary(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    scaled = [v * scale for v in values]
    return (
        f"median {statistics.median(scaled):.3f} {unit} "
        f"(min {min(scaled):.3f}, max {max(scaled):.3f}, {len(scaled)} runs)"
    )


def repeat(runs: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(runs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stored", default="1000,10000,50000")
    parser.add_argument("--buckets", type=int, default=100, help="buckets the stored spread over")
    parser.add_argument(
        "--stored-only", action="store_true", help="skip the first start and the empty outages"
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the releases into FILE")
    args = parser.parse_args()
    servers = resolve_servers()
    unique = unique_name()
    kafka = private_kafka(servers, unique)
    cassandra: CassandraSettings = private_cassandra(servers, unique).model_copy(
        update={"consistency": "LOCAL_QUORUM"}
    )
    setup(kafka, cassandra, LOCAL)
    cluster, session = connect(cassandra, cassandra.keyspace)
    bench = Bench(kafka, session)
    try:
        if not args.stored_only:
            startup_and_outages(bench, args.runs, kafka, session)
        profiler = cProfile.Profile() if args.profile else None
        for count in (int(n) for n in args.stored.split(",")):
            results = [bench.stored(count, args.buckets, profiler) for _ in range(args.runs)]
            seconds = [s for s, _ in results]
            assert all(released == count for _, released in results), results
            rates = [count / s for s in seconds]
            print(
                f"{count:,} stored over {args.buckets} buckets of a 7-day outage:"
                f" {summary(seconds)}; {statistics.median(rates):,.0f} msg/s"
                f" (min {min(rates):,.0f}, max {max(rates):,.0f})"
            )
        if profiler:
            profiler.dump_stats(args.profile)
    finally:
        bench.close()
        cluster.shutdown()
        delete_topics(kafka)
        drop_keyspace(cassandra)
    return 0


def startup_and_outages(bench: Bench, runs: int, kafka: KafkaSettings, session: Session) -> None:
    starts = repeat(runs, lambda: first_start(kafka, LOCAL, session))
    print(f"first start on a new keyspace, until leading: {summary(starts)}")
    for name, scheduling in (("60 s buckets", PRODUCTION), ("5 s buckets", LOCAL)):
        buckets = OUTAGE_MS // scheduling.bucket_width_ms
        indexed = repeat(runs, partial(bench.empty_outage, scheduling, indexed=True))
        print(f"7-day empty outage, {name}, index: {summary(indexed)}")
        if scheduling is PRODUCTION:  # the 5 s walk (120,960 buckets) takes minutes
            walked = repeat(runs, lambda: bench.empty_outage(PRODUCTION, indexed=False))
            print(f"7-day empty outage, {name}, walking {buckets:,} buckets: {summary(walked)}")


if __name__ == "__main__":
    raise SystemExit(main())
