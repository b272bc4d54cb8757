"""`scheduler-releaser`: stream stored buckets into the ring ahead of their due time.

Builds the settings from the environment, the Cassandra stores and the metrics endpoint, joins
the releaser group (only the leader releases) and ticks until SIGTERM/SIGINT; the bucket in
progress completes before the process leaves the group.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from prometheus_client import CollectorRegistry

from scheduler.clock import SystemClock
from scheduler.encryption import EncryptionSettings
from scheduler.gc_tuning import tune_gc
from scheduler.logs import configure_logging
from scheduler.ops import Health
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.pending_counts import CassandraPendingCounts
from scheduler_releaser.metrics import OccurrenceMetrics, ReleaseMetrics
from scheduler_releaser.settings import ReleaseSettings
from scheduler_releaser.wiring import cassandra_stores, serve_ops

from .runtime import run_releaser

log = logging.getLogger("scheduler_releaser.release")


def main() -> int:
    kafka, scheduling, settings = KafkaSettings(), SchedulingSettings(), ReleaseSettings()
    configure_logging("releaser", settings.log_level)
    tune_gc()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current bucket, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cipher = EncryptionSettings().cipher()
    registry = CollectorRegistry()
    metrics = ReleaseMetrics(registry)
    clock = SystemClock()
    # a tick releasing a hotspot bucket can take a while: that is not a stuck loop
    health = Health(clock, stale_after_ms=max(300_000, 10 * settings.tick_ms))
    ops = serve_ops(settings.metrics_port, registry, health)
    try:
        cluster, session, stores = cassandra_stores(CassandraSettings(), cipher, app_secrets=False)
        try:
            run_releaser(
                kafka=kafka,
                scheduling=scheduling,
                settings=settings,
                buckets=stores.buckets,
                messages=stores.messages,
                apps=stores.apps,
                clock=clock,
                metrics=metrics,
                stop=stop,
                health=health,
                pending_counts=CassandraPendingCounts(session),
                schedules=CassandraScheduleStore(session, cipher),
                usage=stores.usage,
                occurrence_metrics=OccurrenceMetrics(registry),
            )
        finally:
            cluster.shutdown()
    except Exception:
        log.exception("releaser stopped on an error")
        return 1
    finally:
        if ops is not None:
            ops.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
