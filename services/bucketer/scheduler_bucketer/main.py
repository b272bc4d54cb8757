"""`scheduler-bucketer`: consume scheduler.requests and scheduler.commands, store or route.

The one place where the bucketer is wired:

    settings (env) -> logging, metrics (own registry, HTTP endpoint)
    Cassandra session -> CassandraMessageStore, CassandraBucketStore, CassandraAppStore,
                         CassandraScheduleStore (ScheduleDefinition records)
    confluent-kafka producer (acks=all, idempotent) and consumer (manual commits)
    build_processor(ports...) -> ConsumerLoop.run() until SIGTERM/SIGINT

Per batch: decode -> validate -> route (ring topic now, or bucket table) -> write (Cassandra,
concurrently) -> re-check the release claim -> produce + flush -> commit offsets. See README.md.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from scheduler.clock import Clock, SystemClock
from scheduler.codec import registry_client
from scheduler.domain.idempotency import claim_ttl_ms
from scheduler.encryption import PLAIN, ColumnCipher, EncryptionSettings
from scheduler.gc_tuning import tune_gc
from scheduler.kafka.producer import KafkaRecordProducer
from scheduler.logs import configure_logging
from scheduler.ops import Health, OpsServer
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.pending_counts import CassandraPendingCounts
from scheduler.store.usage import CassandraUsageStore
from scheduler.topics import Topics

from .cassandra_batches import CassandraBatchWriter
from .loop import ConsumerLoop, consumer_config
from .metrics import BucketerMetrics
from .pipeline import Ports, build_processor
from .settings import BucketerSettings

log = logging.getLogger("scheduler_bucketer")


def run(
    settings: BucketerSettings,
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    scheduling: SchedulingSettings,
    metrics: BucketerMetrics,
    stop: threading.Event,
    clock: Clock | None = None,
    health: Health | None = None,
    cipher: ColumnCipher = PLAIN,
) -> None:
    """Run until `stop` is set; the current batch is finished and committed first."""
    clock = clock or SystemClock()
    topics = Topics(kafka, scheduling)
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    producer = KafkaRecordProducer(kafka.client_config())
    buckets = CassandraBucketStore(session, cipher=cipher)
    messages = CassandraMessageStore(session, cipher)
    writer = CassandraBatchWriter(
        session,
        messages,
        buckets,
        settings.write_batch_statements,
        settings.write_batch_bytes,
        settings.write_concurrency,
    )
    registry = registry_client(kafka.schema_registry_url) if kafka.schema_registry_url else None
    try:
        ports = Ports(
            messages=messages,
            buckets=buckets,
            apps=CassandraAppStore(session, cipher, open_secrets=False),  # never uses them
            producer=producer,
            clock=clock,
            usage=CassandraUsageStore(session),
            pending=CassandraPendingCounts(session),
            schedules=CassandraScheduleStore(session, cipher),  # payloads sealed like messages'
            key_ttl_ms=claim_ttl_ms(kafka.requests_retention_ms),
        )
        processor = build_processor(ports, topics, scheduling, settings, metrics, writer, registry)
        consumer = Consumer(consumer_config(kafka.client_config(), settings))
        ConsumerLoop(consumer, processor, topics, settings, metrics, clock, stop, health).run()
    finally:
        writer.close()
        producer.close()
        cluster.shutdown()
        log.info("stopped")


def main() -> int:
    settings = BucketerSettings()
    configure_logging("bucketer", settings.log_level)
    tune_gc()
    registry = CollectorRegistry()
    metrics = BucketerMetrics(registry)
    clock = SystemClock()
    # A retry backoff must not look like a stuck loop: liveness allows twice the longest wait.
    health = Health(clock, stale_after_ms=max(60_000, 2 * settings.retry_max_ms))
    ops = (  # /metrics, /healthz, /readyz
        OpsServer("0.0.0.0", settings.metrics_port, registry, health)  # noqa: S104
        if settings.metrics_port
        else None
    )
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(
            settings,
            KafkaSettings(),
            CassandraSettings(),
            SchedulingSettings(),
            metrics,
            stop,
            clock,
            health,
            EncryptionSettings().cipher(),
        )
    finally:
        if ops is not None:
            ops.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
