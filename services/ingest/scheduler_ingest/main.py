"""Entry point of the ingest gateway: `scheduler-ingest` (or `python -m scheduler_ingest.main`).

Builds the settings (environment, SCHEDULER_*), logging, the Cassandra session and stores, the
idempotent Kafka producer and the metrics registry, then serves HTTP with uvicorn. SIGTERM and
SIGINT stop accepting connections, let in-flight requests finish (uvicorn's graceful shutdown),
then flush the producer and close Cassandra.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from types import FrameType

import uvicorn
from cassandra.cluster import Session
from prometheus_client import CollectorRegistry

from scheduler.clock import SystemClock
from scheduler.codec import RecordCodec, registry_client
from scheduler.encryption import EncryptionSettings
from scheduler.gc_tuning import tune_gc
from scheduler.logs import configure_logging
from scheduler.ops import OpsServer
from scheduler.records import DeliveryResult
from scheduler.security import SecretHasher, SecuritySettings
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.usage import CassandraUsageStore
from scheduler.topics import Topics
from scheduler_ingest.app import Deps, create_app
from scheduler_ingest.destinations import KafkaTopicDirectory
from scheduler_ingest.metrics import IngestMetrics
from scheduler_ingest.outcomes import KafkaResultLookup
from scheduler_ingest.publisher import KafkaPublisher, producer_config
from scheduler_ingest.settings import IngestSettings

log = logging.getLogger("scheduler_ingest.main")


def main() -> int:
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level)
    tune_gc()
    kafka, cassandra, scheduling = KafkaSettings(), CassandraSettings(), SchedulingSettings()
    hasher = SecretHasher.from_settings(SecuritySettings())
    cipher = EncryptionSettings().cipher()
    clock = SystemClock()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    metrics_server = serve_metrics(settings, registry)
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    topics = Topics(kafka, scheduling)
    requests_topic = topics.requests
    schema_registry = (
        registry_client(kafka.schema_registry_url) if kafka.schema_registry_url else None
    )

    def on_latency(topic: str, seconds: float) -> None:
        kind = "requests" if topic == requests_topic else "commands"
        metrics.produce_seconds.labels(kind).observe(seconds)

    publisher = KafkaPublisher(
        producer_config(kafka, settings.produce_timeout_ms, settings.linger_ms), clock, on_latency
    )
    try:
        app = create_app(
            settings,
            Deps(
                messages=CassandraMessageStore(session, cipher),
                schedules=CassandraScheduleStore(session, cipher),
                apps=CassandraAppStore(session, cipher),
                usage=CassandraUsageStore(session),
                publisher=publisher,
                destinations=KafkaTopicDirectory(kafka.client_config()),
                clock=clock,
                registry=registry,
                metrics=metrics,
                hasher=hasher,
                kafka=kafka,
                scheduling=scheduling,
                probes={"cassandra": lambda: _cassandra_answers(session)},
                schema_registry=schema_registry,
                # The dispatcher's results: single-object Avro, or the registry's wire format
                # (decoding reads either; the subject follows the releaser's codecs).
                results=KafkaResultLookup(
                    kafka,
                    topics.results,
                    RecordCodec(
                        DeliveryResult,
                        registry=schema_registry,
                        subject=DeliveryResult.AVRO_NAME if schema_registry else None,
                    ),
                    clock,
                ),
            ),
        )
        # The long-lived objects of startup (FastAPI, pydantic schemas, the drivers) leave the
        # collector's generations: full collections, which pause every request, get cheaper.
        gc.freeze()
        log.info("ingest listening on %s:%d", settings.host, settings.port)
        # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown), then re-raises the signal
        # to the handler that was installed before it. A no-op handler there lets this
        # function go on to flush the producer and close Cassandra instead of dying.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _after_graceful_shutdown)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    finally:
        publisher.close()
        cluster.shutdown()
        if metrics_server is not None:
            metrics_server.close()
        log.info("ingest stopped")
    return 0


def serve_metrics(settings: IngestSettings, registry: CollectorRegistry) -> OpsServer | None:
    """/metrics on its own port (0: none). Not on the API's port: the labels name apps, and the
    API port is the one a public Service or an Ingress exposes."""
    if not settings.metrics_port:
        return None
    log.info("ingest metrics on %s:%d", settings.host, settings.metrics_port)
    return OpsServer(settings.host, settings.metrics_port, registry, health=None)


def _after_graceful_shutdown(signum: int, _frame: FrameType | None) -> None:
    log.info("received %s: stopped serving", signal.Signals(signum).name)


def _cassandra_answers(session: Session) -> bool:
    row = session.execute("SELECT release_version FROM system.local", timeout=2).one()
    return row is not None


if __name__ == "__main__":
    sys.exit(main())
