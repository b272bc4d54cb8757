"""`scheduler-dispatcher`: fire due messages at their due instant (see runtime.py, README.md).

Builds the settings from the environment, the Cassandra stores, the metrics endpoint, and runs
the dispatcher until SIGTERM/SIGINT, after which in-flight deliveries finish and the last
transaction commits. The record writer runs as a supervised child process (writer_runner.py),
and so does the failure notifier (failures/process.py: each message that ends FAILED is sent to
its app's failure destination), which is stopped alongside the dispatcher on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry

from scheduler.clock import SystemClock
from scheduler.encryption import EncryptionSettings
from scheduler.gc_tuning import tune_gc
from scheduler.logs import configure_logging
from scheduler.ops import Health
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from scheduler_releaser.failures.notifier import MetricsEvents
from scheduler_releaser.failures.process import ProcessFailureNotifier
from scheduler_releaser.metrics import DispatchMetrics, FailureNoticeMetrics
from scheduler_releaser.settings import DispatchSettings, FailureNoticeSettings
from scheduler_releaser.wiring import cassandra_stores, serve_ops

from .runtime import instance_id, run_dispatcher
from .writer_runner import ProcessRecordWriter

log = logging.getLogger("scheduler_releaser.dispatch")


async def _serve(settings: DispatchSettings) -> None:
    kafka, scheduling = KafkaSettings(), SchedulingSettings()
    encryption = EncryptionSettings()
    cipher = encryption.cipher()
    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)
    clock = SystemClock()
    health = Health(clock)
    ops = serve_ops(settings.metrics_port, registry, health)
    cassandra = CassandraSettings()
    cluster, _, stores = await asyncio.to_thread(cassandra_stores, cassandra, cipher)
    # A child process: its Cassandra writes would otherwise delay this loop (writer_runner.py).
    record_writer = ProcessRecordWriter(
        kafka,
        cassandra,
        Topics(kafka, scheduling).results,
        lambda outcome, n: metrics.records_written.labels(outcome).inc(n),
        member=instance_id(kafka, settings, "record-writer"),
        restarted=metrics.record_writer_restarts.inc,
        log_level=settings.log_level,
    )
    notifier = _failure_notifier(kafka, scheduling, cassandra, encryption, settings, registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Stopped as soon as the dispatcher is asked to stop: its budget runs alongside the
    # dispatcher's own, not after it (ARCHITECTURE.md, "SIGTERM is bounded in every state").
    notifier_stopped = asyncio.create_task(_stop_on(stop, notifier))
    try:
        await run_dispatcher(
            kafka=kafka,
            scheduling=scheduling,
            settings=settings,
            stores=stores,
            clock=clock,
            metrics=metrics,
            stop=stop,
            health=health,
            record_writer=record_writer,
        )
    finally:
        stop.set()
        await notifier_stopped
        cluster.shutdown()
        if ops is not None:
            ops.close()


def _failure_notifier(
    kafka: KafkaSettings,
    scheduling: SchedulingSettings,
    cassandra: CassandraSettings,
    encryption: EncryptionSettings,
    settings: DispatchSettings,
    registry: CollectorRegistry,
) -> ProcessFailureNotifier | None:
    """The failure notifier of this instance, started (None when turned off)."""
    notices = FailureNoticeSettings()
    if not notices.notices:
        log.info("failure notices are off (SCHEDULER_DISPATCH_FAILURE_NOTICES=false)")
        return None
    metrics = FailureNoticeMetrics(registry)
    notifier = ProcessFailureNotifier(
        kafka=kafka,
        cassandra=cassandra,
        encryption=encryption,
        dispatch=settings,
        settings=notices,
        dead_letter_topic=Topics(kafka, scheduling).dead_letter,
        events=MetricsEvents(metrics),
        member=instance_id(kafka, settings, "failure-notifier"),
        restarted=metrics.restarts.inc,
    )
    notifier.start()
    return notifier


async def _stop_on(stop: asyncio.Event, notifier: ProcessFailureNotifier | None) -> None:
    await stop.wait()
    if notifier is not None:
        await asyncio.to_thread(notifier.stop)


def main() -> int:
    settings = DispatchSettings()
    configure_logging("dispatcher", settings.log_level)
    tune_gc()
    try:
        asyncio.run(_serve(settings))
    except Exception:
        log.exception("dispatcher stopped on an error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
