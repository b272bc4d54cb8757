"""Wiring of the dispatcher process: Kafka clients, stores, the loops. Used by `dispatch_main`
and by the integration tests (which pass their own settings and clock).

    startup: init transactions (fences a previous incarnation of this instance) -> commands
             view caught up -> results since the oldest unsettled ring record loaded -> ring
             assigned at committed offsets, future slots paused
    loop:    poll ring + commands (non-blocking) -> rotate slots -> start due deliveries ->
             every txn_interval_ms commit one transaction -> sleep until the next due or 2 ms
    SIGTERM: stop firing, let in-flight deliveries finish, commit, close.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from scheduler.clock import Clock
from scheduler.codec import DecodeError
from scheduler.ops import Health
from scheduler.records import DeliveryResult
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import AppLookup, BucketStore, MessageStore
from scheduler.store.usage import UsageStore
from scheduler.topics import Topics

from .apps import AppCache
from .codecs import Codecs
from .commands import CommandView
from .dispatcher import Dispatcher
from .feeds import CommandsFeed, RingFeed, consumer_config, load_results
from .http_post import AiohttpPost
from .metrics import DispatchMetrics
from .offsets import OffsetTracker
from .outbound import OutboundGuard
from .record_writer import RecordWriter
from .rest import RestDeliverer
from .settings import DispatchSettings
from .sink import TransactionalSink, transactional_producer
from .status_reader import StatusReader, StoreStatusReader

log = logging.getLogger(__name__)
IDLE_S = 0.002  # loop tick when nothing is due sooner


@dataclass
class Stores:
    messages: MessageStore
    buckets: BucketStore
    apps: AppLookup
    usage: UsageStore
    states: StatusReader | None = None  # batched fire-time reads; default: over `messages`

    def status_reader(self) -> StatusReader:
        return self.states if self.states is not None else StoreStatusReader(self.messages)


def transactional_id(kafka: KafkaSettings, settings: DispatchSettings) -> str:
    """Stable per partition set: a restarted instance fences its zombie predecessor."""
    return f"{kafka.topic_prefix}dispatcher-{settings.instance}-of-{settings.instances}"


async def run_dispatcher(
    *,
    kafka: KafkaSettings,
    scheduling: SchedulingSettings,
    settings: DispatchSettings,
    stores: Stores,
    clock: Clock,
    metrics: DispatchMetrics,
    stop: asyncio.Event,
    health: Health | None = None,
) -> None:
    health = health or Health(clock)
    topics = Topics(kafka, scheduling)
    codecs = Codecs.build(kafka)
    group = f"{kafka.topic_prefix}dispatcher"
    producer_config = {
        **kafka.client_config(),
        "transactional.id": transactional_id(kafka, settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
        "transaction.timeout.ms": 60_000,
        # A KAFKA app naming a missing topic fails; it must not create one.
        "allow.auto.create.topics": False,
        # After a commit the coordinator answers CONCURRENT_TRANSACTIONS until its markers
        # are written; the default 100 ms retry backoff then dominated every transaction
        # that carries offsets (measured: p50 107 ms -> 8 ms with 5 ms).
        "retry.backoff.ms": 5,
        "retry.backoff.max.ms": 50,
    }
    ring_consumer = Consumer(
        consumer_config(kafka, group, **{"fetch.wait.max.ms": 5, "fetch.error.backoff.ms": 50})
    )
    commands_consumer = Consumer(
        consumer_config(
            kafka,
            f"{group}-commands-{settings.instance}",
            **{"enable.partition.eof": True, "fetch.wait.max.ms": 5},
        )
    )
    tracker = OffsetTracker()
    view = CommandView(kafka.commands_partitions, clock.now_ms())
    sink = TransactionalSink(
        transactional_producer(producer_config, init_timeout_s=60),
        ring_consumer.consumer_group_metadata,
        tracker,
        clock,
        metrics,
        settings.txn_max_emits,
        settings.txn_recover_ms,
        settings.txn_offsets_interval_ms,
    )
    # Fences a previous incarnation of this instance (same transactional.id).
    await sink.start()
    http = AiohttpPost(settings.http_max_connections, settings.http_timeout_s)
    rest = RestDeliverer(
        http,
        OutboundGuard(settings.allow_private_destinations),
        clock,
        settings.per_app_concurrency,
        settings.body_excerpt_chars,
    )
    dispatcher = Dispatcher(
        clock=clock,
        kafka=kafka,
        scheduling=scheduling,
        settings=settings,
        states=stores.status_reader(),
        buckets=stores.buckets,
        apps=AppCache(stores.apps, clock),
        commands=view,
        rest=rest,
        topic_check=ProducerTopicCheck(lambda: sink.producer),
        sink=sink,
        codecs=codecs,
        metrics=metrics,
    )
    ring = RingFeed(
        ring_consumer,
        topics=topics,
        scheduling=scheduling,
        settings=settings,
        clock=clock,
        tracker=tracker,
        dispatcher=dispatcher,
        codecs=codecs,
        sink=sink,
        metrics=metrics,
    )
    commands = CommandsFeed(commands_consumer, topics.commands, view, codecs, clock)
    writer_stop = threading.Event()
    writer = threading.Thread(
        target=run_record_writer,
        args=(kafka, topics.results, RecordWriter(stores.messages, stores.usage), codecs),
        kwargs={"metrics": metrics, "stop": writer_stop},
        name="record-writer",
        daemon=True,
    )
    try:
        now = clock.now_ms()
        commands.start(now - topics.ring.cycle_ms)
        await asyncio.to_thread(commands.catch_up, 30_000)
        since = ring.start(now)
        loader = Consumer(
            consumer_config(kafka, f"{group}-results-load", **{"enable.partition.eof": True})
        )
        try:
            since -= settings.results_slack_ms
            loaded = await asyncio.to_thread(
                load_results, loader, topics.results, since, dispatcher.timers, codecs
            )
        finally:
            loader.close()
        log.info("dispatcher %s started: %d settled attempts loaded", settings.instance, loaded)
        writer.start()
        health.set_ready(True, "dispatching")
        await _loop(dispatcher, ring, commands, sink, clock, settings, stop, health)
        log.info("stopping: %d deliveries in flight", dispatcher.in_flight)
        dispatcher.stopping = True  # requests under way finish; waiting ones stay unsettled
        await dispatcher.drain()
        await sink.flush()
    finally:
        writer_stop.set()
        await http.close()
        ring_consumer.close()
        commands_consumer.close()
        if writer.is_alive():
            await asyncio.to_thread(writer.join, 10)
        sink.producer.flush(10)


async def _loop(
    dispatcher: Dispatcher,
    ring: RingFeed,
    commands: CommandsFeed,
    sink: TransactionalSink,
    clock: Clock,
    settings: DispatchSettings,
    stop: asyncio.Event,
    health: Health,
) -> None:
    commit_task: asyncio.Task[int] | None = None
    watch = TransactionWatch(settings.txn_stuck_ms)
    last_commit = clock.monotonic_ms()
    last_prune = clock.now_ms()
    while not stop.is_set():
        if watch.healthy(clock.monotonic_ms()):
            health.beat()
        now = clock.now_ms()
        commands.poll()
        ring.rotate(now)
        ring.poll()
        dispatcher.start_due()
        mono = clock.monotonic_ms()
        if commit_task is not None and commit_task.done():
            commit_task.result()  # a fatal sink error stops the process here
            commit_task = None
            watch.finished()
        backlog = sink.pending >= settings.txn_max_emits
        if commit_task is None and (backlog or mono - last_commit >= settings.txn_interval_ms):
            last_commit = mono
            commit_task = asyncio.create_task(sink.flush())
            watch.started(mono)
        if now - last_prune > 10_000:
            last_prune = now
            # Older duplicates are still caught by the fire-time record check (SENT/FAILED).
            dispatcher.timers.prune(now - settings.dedup_window_ms)
            commands.view.prune(now - 2 * ring.cycle_ms)
        head = dispatcher.timers.next_due_ms()
        wait = IDLE_S if head is None else min(IDLE_S, max(0.0, (head - clock.now_ms()) / 1000))
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            await asyncio.sleep(0)
    if commit_task is not None:
        await commit_task


class TransactionWatch:
    """Liveness guard: a transaction in flight for longer than `stuck_ms` stops the heartbeat.

    After a broker restart, a transactional call has been seen to block forever (docs/
    ARCHITECTURE.md, "Kafka restart"). Nothing is lost then (offsets are not committed), but
    deliveries to Kafka stall until the process restarts; failing /healthz lets the orchestrator
    restart it, which the kill -9 tests show is safe (no loss, no duplicate).
    """

    def __init__(self, stuck_ms: int) -> None:
        self._stuck_ms = stuck_ms
        self._started: float | None = None
        self._reported = False

    def started(self, mono_ms: float) -> None:
        self._started = mono_ms

    def finished(self) -> None:
        self._started, self._reported = None, False

    def healthy(self, mono_ms: float) -> bool:
        if self._started is None or mono_ms - self._started < self._stuck_ms:
            return True
        if not self._reported:
            self._reported = True
            log.error(
                "a Kafka transaction has been in flight for %.0f s: reporting not alive so that "
                "the process is restarted",
                (mono_ms - self._started) / 1000,
            )
        return False


class ProducerTopicCheck:
    """Destination topics known to exist, from producer metadata (cached for a minute)."""

    def __init__(self, producer: Callable[[], Producer], ttl_ms: float = 60_000) -> None:
        self._producer = producer  # the sink's current one (replaced after a stuck transaction)
        self._known: set[str] = set()

    async def exists(self, topic: str) -> bool:
        if topic in self._known:
            return True
        metadata = await asyncio.to_thread(self._producer().list_topics, topic, 10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return False
        self._known.add(topic)
        return True


def run_record_writer(
    kafka: KafkaSettings,
    results_topic: str,
    writer: RecordWriter,
    codecs: Codecs,
    *,
    metrics: DispatchMetrics,
    stop: threading.Event,
    workers: int = 8,
) -> None:
    """Results -> records, at least once: offsets are committed after the writes returned."""
    # The offset store follows consumption; the commit below happens after the writes returned.
    consumer = Consumer(
        consumer_config(
            kafka, f"{kafka.topic_prefix}record-writer", **{"enable.auto.offset.store": True}
        )
    )
    consumer.subscribe([results_topic])
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="record-writer")
    try:
        while not stop.is_set():
            try:
                _write_batch(consumer, writer, codecs, pool, metrics)
            except Exception:
                # Nothing was committed for the failed batch: rejoin the group, which resumes
                # from the committed offsets, so the batch is consumed again.
                log.exception("record writer batch failed; resuming from the committed offsets")
                stop.wait(1.0)
                consumer.unsubscribe()
                consumer.subscribe([results_topic])
    finally:
        pool.shutdown(wait=True)
        consumer.close()


def _write_batch(
    consumer: Consumer,
    writer: RecordWriter,
    codecs: Codecs,
    pool: ThreadPoolExecutor,
    metrics: DispatchMetrics,
) -> None:
    messages = consumer.consume(num_messages=500, timeout=0.1)
    results: list[DeliveryResult] = []
    for msg in messages:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("results consumer error: %s", error)
            continue
        try:
            results.append(codecs.result.decode(msg.value() or b""))
        except DecodeError:
            log.warning("undecodable result at offset %s", msg.offset())
    for result, _ in zip(results, pool.map(_apply_with_retry(writer), results), strict=True):
        metrics.records_written.labels(result.outcome.value).inc()
    if results:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the results are re-applied (idempotently) after a restart.
            log.warning("record writer commit failed: %s", exc)


def _apply_with_retry(writer: RecordWriter) -> Callable[[DeliveryResult], None]:
    def apply(result: DeliveryResult) -> None:
        while True:
            try:
                writer.apply(result)
                return
            except Exception:
                log.exception("writing the record of %s failed; retrying", result.message_id)
                threading.Event().wait(0.5)

    return apply
