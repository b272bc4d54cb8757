"""Wiring of the dispatcher process: Kafka clients, stores, the loops. Used by `dispatch_main`
and by the integration tests (which pass their own settings and clock).

    startup: fence every other owner of this instance's ring partitions (ownership.py) ->
             init transactions (fences a previous incarnation of this instance) -> commands
             view caught up -> ring assigned at committed offsets (else at their first
             retained record), future slots drained then paused -> results since the oldest
             unsettled ring record loaded
    loop:    poll ring + commands (non-blocking) -> rotate slots, probe draining ones ->
             start due deliveries -> sleep until the next due or 2 ms; after a quiet
             second (nothing due within it, nothing read), wait instead on the ring
             consumer in a worker thread: a record wakes the loop at once
    tasks:   the commands view confirmed every `commands_confirm_ms`; ring partitions listed
             every `metadata_refresh_ms`; the record writers' progress asked every second
             (all in worker threads)
    commit:  its own task: transactions back to back while anything is settled
    records: the record writer (writer_runner.py: a thread here by default, a child process
             in `scheduler-dispatcher`)
    SIGTERM: stop firing, let in-flight deliveries finish, commit, close; bounded in every
             state (a failing transaction is not retried, `shutdown_timeout_ms` caps the rest).
    fenced:  another owner took these partitions: stop firing, report not ready, and wait for
             SIGTERM (never fence back, never restart into a fencing loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer

from scheduler.clock import Clock
from scheduler.kafka.transactions import init_transactions
from scheduler.ops import Health
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import AppLookup, BucketStore, MessageStore
from scheduler.store.usage import UsageStore
from scheduler.tasks import cancel_and_wait
from scheduler.topics import RESULTS_MIN_COMPACTION_LAG_MS, Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.metrics import DispatchMetrics
from scheduler_releaser.settings import DispatchSettings

from . import ownership
from .apps import AppCache
from .commands import ABORTS_KEPT_CYCLES, CommandView
from .core import Dispatcher
from .feeds import (
    CommandsFeed,
    RecordsProgressFeed,
    RingFeed,
    consumer_config,
    load_results,
    partition_count,
)
from .http_post import AiohttpPost
from .offsets import OffsetTracker
from .outbound import OutboundGuard
from .ownership import ids_to_fence, transactional_id
from .pace import Pace
from .record_writer import RecordWriter
from .records_progress import RecordsProgress
from .rest import RestDeliverer
from .sink import FencedError, SinkStopped, TransactionalSink, transactional_producer
from .status_reader import StatusReader
from .writer_runner import RecordWriterRunner, ThreadRecordWriter

log = logging.getLogger(__name__)
IDLE_S = 0.002  # loop tick while anything is due within QUIET_AFTER_MS or was read within it
QUIET_S = 0.5  # longest quiet wait (a record read ends it at once)
QUIET_AFTER_MS = 1_000
LOOP_STALL_MS = 5_000  # a loop turn longer than this is logged
COMMANDS_FETCH_WAIT_MS = 500
RING_FETCH_WAIT_MS = 500  # see ring_consumer below


def is_quiet(now_ms: int, head_ms: int | None, last_read_ms: int, in_flight: int) -> bool:
    """Nothing is firing, nothing held is due within QUIET_AFTER_MS and nothing was read within
    it: the loop waits on the ring consumer in a worker thread instead of ticking, and the
    questions to Kafka slow down (ARCHITECTURE.md, "Idle cost"). A message already taken off
    the heap still waits for its due instant and for a fresh commands view, so it keeps the
    loop from being quiet."""
    due_soon = head_ms is not None and head_ms - now_ms <= QUIET_AFTER_MS
    return not in_flight and not due_soon and now_ms - last_read_ms >= QUIET_AFTER_MS


def loop_wait_s(now_ms: int, head_ms: int | None) -> float:
    """How long a loop that is not quiet sleeps before its next tick: IDLE_S, never past the
    next due instant."""
    if head_ms is None:
        return IDLE_S
    return min(IDLE_S, max(0.0, (head_ms - now_ms) / 1000))


@dataclass
class Stores:
    messages: MessageStore
    buckets: BucketStore
    apps: AppLookup
    usage: UsageStore
    states: StatusReader  # batched fire-time reads of `messages`' status groups


def instance_id(kafka: KafkaSettings, settings: DispatchSettings, role: str) -> str:
    """Stable per partition set, e.g. the transactional id (`role` "dispatcher": a restarted
    instance fences its zombie predecessor) or the record writer's static group member id."""
    return ownership.instance_id(kafka.topic_prefix, role, settings.instance, settings.instances)


def fence_other_owners(
    producer_config: dict[str, object], ids: list[str], timeout_s: float = 60.0
) -> None:
    """`init_transactions` under each id (blocking, in parallel): Kafka aborts that owner's open
    transaction and refuses its later ones (ownership.py)."""

    def fence(transactional_id: str) -> None:
        producer = Producer({**producer_config, "transactional.id": transactional_id})
        init_transactions(producer, timeout_s)
        producer.flush(0)

    # Each mostly waits on the coordinator: all at once, up to 32.
    workers = min(32, max(1, len(ids)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fence") as pool:
        list(pool.map(fence, ids))


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
    record_writer: RecordWriterRunner | None = None,
) -> None:
    """`record_writer`: where results become records (default: a thread on `stores`)."""
    health = health or Health(clock)
    topics = Topics(kafka, scheduling)
    codecs = Codecs.build(kafka)
    group = f"{kafka.topic_prefix}dispatcher"
    producer_config: dict[str, object] = {
        **kafka.client_config(),
        "transactional.id": transactional_id(
            kafka.topic_prefix, settings.instance, settings.instances
        ),
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
        # A destination topic deleted since it was checked: refused (UNKNOWN_TOPIC) within the
        # destination timeout, not after the default 30 s.
        "topic.metadata.propagation.max.ms": min(2_000, settings.destination_timeout_ms // 2),
    }
    # A long-polled fetch is answered as soon as records arrive (a read_committed one as soon as
    # their transaction commits), so the wait costs no lateness: librdkafka's default. At 5 ms it
    # cost the broker 200 fetches a second (ARCHITECTURE.md, "Idle cost"). The ring's questions
    # go through a client of their own (RingFeed): asked on this one they waited behind the
    # fetch and held the loop at every slot start.
    ring_consumer = Consumer(
        consumer_config(
            kafka,
            group,
            **{"fetch.wait.max.ms": RING_FETCH_WAIT_MS, "fetch.error.backoff.ms": 50},
        )
    )
    # The results of one transaction go to one results partition, taking turns (sink.py).
    results_partitions = await asyncio.to_thread(partition_count, ring_consumer, topics.results)
    tracker = OffsetTracker()
    view = CommandView(clock.now_ms())
    records = RecordsProgress()
    sink = TransactionalSink(
        transactional_producer(producer_config, init_timeout_s=60),
        # Asked once, not per transaction: the call waits for a consume in progress in the
        # ring's worker thread (up to QUIET_S), which held each transaction of a hotspot's
        # drain up to half a second. The value never changes for a consumer assigned by hand.
        ring_consumer.consumer_group_metadata(),
        tracker,
        clock,
        metrics,
        settings.txn_max_emits,
        settings.txn_recover_ms,
        settings.txn_offsets_interval_ms,
        settings.offsets_refresh_ms,
        settings.destination_timeout_ms,
        gathered={topics.results: results_partitions} if results_partitions else None,
    )
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
        states=stores.states,
        buckets=stores.buckets,
        apps=AppCache(stores.apps, clock),
        commands=view,
        rest=rest,
        topic_check=ProducerTopicCheck(lambda: sink.producer, clock),
        sink=sink,
        codecs=codecs,
        metrics=metrics,
        records=records,
    )
    # The ring's questions (listings, committed and end offsets): never assigned anything.
    ring_asker = Consumer(consumer_config(kafka, group))
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
        asker=ring_asker,
    )
    commands = commands_feed(
        kafka, scheduling, settings, view, codecs, clock, on_lag=metrics.commands_lag.set
    )
    # Never joins the record writers' group: it only reads their committed offsets.
    progress_consumer = Consumer(consumer_config(kafka, f"{kafka.topic_prefix}record-writer"))
    progress = RecordsProgressFeed(
        progress_consumer, topics.results, records, clock, metrics.records_lag.set
    )
    writer = record_writer or ThreadRecordWriter(
        kafka,
        topics.results,
        RecordWriter(stores.messages, stores.usage),
        codecs,
        lambda outcome, n: metrics.records_written.labels(outcome).inc(n),
    )
    fenced = False  # stood down: its producer has nothing left to flush at exit
    try:
        # Before any committed offset is read: no other owner can commit one afterwards.
        partitions = sorted({tp.partition for tp in await asyncio.to_thread(ring.owned)})
        others = ids_to_fence(
            kafka.topic_prefix,
            partitions,
            settings.instance,
            settings.instances,
            settings.max_instances,
        )
        # At once: the sink's producer fences a previous incarnation of this instance (same id).
        await asyncio.gather(
            asyncio.to_thread(fence_other_owners, producer_config, others),
            sink.start(),
        )
        log.info("fenced %d other possible owners of ring partitions %s", len(others), partitions)
        now = clock.now_ms()
        commands_from = now - topics.ring.cycle_ms
        await asyncio.to_thread(commands.start, commands_from)
        if not await commands.catch_up(30_000):
            log.warning("commands view not current after 30 s: firing waits until it is")
        since = await asyncio.to_thread(ring.start, now, settings.results_slack_ms)
        loader = Consumer(
            consumer_config(kafka, f"{group}-results-load", **{"enable.partition.eof": True})
        )
        try:
            loaded = await asyncio.to_thread(
                load_results, loader, topics.results, since, dispatcher.timers, codecs
            )
        finally:
            loader.close()
        # Every settlement since `since` is now in the timer queue, except what compaction may
        # have merged away: an attempt superseded by a later one of its message (topics.py).
        known = max(since, clock.now_ms() - RESULTS_MIN_COMPACTION_LAG_MS)
        dispatcher.know_since(known, commands_from)
        log.info(
            "dispatcher %s started: %d settled attempts loaded, all known since %d",
            settings.instance,
            loaded,
            known,
        )
        # The long-lived objects of startup (drivers, clients, codecs) leave the collector's
        # generations: full collections, which stall firing for tens of ms, get cheaper.
        gc.freeze()
        writer.start()
        health.set_ready(True, "dispatching")
        try:
            await _loop(dispatcher, ring, commands, progress, sink, clock, settings, stop, health)
        except FencedError as exc:
            metrics.fenced.set(1)
            fenced = True
            await _stand_down(dispatcher, health, stop, exc)
        else:
            fenced = not await _stop(dispatcher, sink, metrics, settings.shutdown_timeout_ms)
    finally:
        await asyncio.to_thread(writer.stop, 10)
        await http.close()
        await ring.finish_wait()
        ring_consumer.close()
        ring_asker.close()
        commands.close()
        progress_consumer.close()
        if not fenced:  # a fenced producer has nothing left to deliver
            try:
                sink.producer.flush(10)
            except (KafkaException, SystemError) as exc:  # failed: nothing left to commit
                log.info("transactional producer not flushed at exit: %s", exc)


def commands_feed(
    kafka: KafkaSettings,
    scheduling: SchedulingSettings,
    settings: DispatchSettings,
    view: CommandView,
    codecs: Codecs,
    clock: Clock,
    fetch_wait_ms: int = COMMANDS_FETCH_WAIT_MS,
    on_lag: Callable[[float], None] = lambda _: None,
) -> CommandsFeed:
    """The commands view's reader. Long-polled: the view follows the consumer's position, which
    passes a transaction's marker as soon as the fetch answered on its commit is read; the
    view's questions (where each partition ends) go through a client of their own, not queued
    behind that fetch (feeds.CommandsFeed)."""
    group = f"{kafka.topic_prefix}dispatcher-commands-{settings.instance}"
    return CommandsFeed(
        Consumer(consumer_config(kafka, group, **{"fetch.wait.max.ms": fetch_wait_ms})),
        Topics(kafka, scheduling).commands,
        view,
        codecs,
        clock,
        # The view's lag reaches about one interval between confirmations: keep it a quarter
        # of the guard at most, or firing would pause on a view that is merely between two.
        min(settings.commands_confirm_ms, max(10, scheduling.cancel_guard_ms // 4)),
        asker=Consumer(consumer_config(kafka, group)),
        on_lag=on_lag,
    )


async def _stop(
    dispatcher: Dispatcher, sink: TransactionalSink, metrics: DispatchMetrics, timeout_ms: int
) -> bool:
    """SIGTERM: requests under way finish, waiting ones stay unsettled, the settled ones commit;
    all of it bounded: a transaction that fails now is not retried, and the whole stop is given
    up after `timeout_ms`. What is not committed is read again after the restart. False: this
    instance turned out to be fenced."""
    log.info("stopping: %d deliveries in flight", dispatcher.in_flight)
    dispatcher.stopping = True
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            await dispatcher.drain()
            while sink.pending:  # a flush takes at most txn_max_emits
                await sink.flush()
            await sink.flush()  # the offsets of the last settled records
    except FencedError as exc:  # fenced just before the stop: the new owner reads them
        metrics.fenced.set(1)
        log.warning(
            "fenced while stopping (%s): the last settlements are left to the new owner", exc
        )
        return False
    except (SinkStopped, TimeoutError) as exc:
        log.warning(
            "stopped without committing %d settled attempt(s) (%s): they are read again after"
            " the restart",
            sink.pending,
            exc or f"not done within {timeout_ms} ms",
        )
    return True


async def _stand_down(
    dispatcher: Dispatcher, health: Health, stop: asyncio.Event, exc: FencedError
) -> None:
    """Another owner holds these partitions now. Nothing of ours can commit any more (Kafka
    refuses it); the new owner reads what we left unsettled. Stay alive and not ready until
    stopped: exiting would let a supervisor restart this instance, which would fence back."""
    log.error(
        "fenced (%s): another dispatcher owns these ring partitions now (a new incarnation, or"
        " a changed instance count); standing down until stopped",
        exc,
    )
    dispatcher.stopping = True
    health.set_ready(False, "fenced by another owner of its ring partitions")
    while not stop.is_set():
        health.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await dispatcher.drain()


async def _loop(
    dispatcher: Dispatcher,
    ring: RingFeed,
    commands: CommandsFeed,
    progress: RecordsProgressFeed,
    sink: TransactionalSink,
    clock: Clock,
    settings: DispatchSettings,
    stop: asyncio.Event,
    health: Health,
) -> None:
    watch = TransactionWatch(settings.txn_stuck_ms)
    pace = Pace()  # the questions to Kafka slow down while the loop is quiet
    progress_task = asyncio.create_task(progress.run(stop, pace))
    committer = asyncio.create_task(_commit_loop(sink, clock, settings, stop, watch))
    confirmer = asyncio.create_task(commands.confirm(stop, pace))
    last_prune = last_read = clock.now_ms()
    turned = clock.monotonic_ms()
    try:
        while not stop.is_set():
            if committer.done():
                committer.result()  # a fatal sink error stops the process here
            mono = clock.monotonic_ms()
            if mono - turned > LOOP_STALL_MS:  # a frozen process, or a wait that overran
                log.warning("the firing loop did not turn for %.1f s", (mono - turned) / 1000)
            turned = mono
            if watch.healthy(mono):
                health.beat()
            now = clock.now_ms()
            read = commands.poll()
            ring.rotate(now)
            ring.probe(now)
            ring.refresh(now)
            read += ring.poll()
            if read:
                last_read = now
            dispatcher.start_due()
            if now - last_prune > 10_000:
                last_prune = now
                ring.report()
                # Older duplicates are still caught by the fire-time record check (SENT/FAILED).
                dispatcher.timers.prune(now - settings.dedup_window_ms)
                commands.view.prune(now - ABORTS_KEPT_CYCLES * ring.cycle_ms)
            head = dispatcher.timers.next_due_ms()
            now = clock.now_ms()
            quiet = is_quiet(now, head, last_read, dispatcher.in_flight)
            pace.set_quiet(quiet)  # leaving quiet asks Kafka at once
            if quiet:
                if await ring.wait(QUIET_S, until=committer):
                    last_read = clock.now_ms()
            else:
                await asyncio.sleep(loop_wait_s(now, head))
    finally:
        sink.close()  # a transaction that fails from now on is not retried
        progress_task.cancel()
        await cancel_and_wait(confirmer)
        with contextlib.suppress(SinkStopped):
            await committer  # its transaction in flight ends; the caller's final flush follows


async def _commit_loop(
    sink: TransactionalSink,
    clock: Clock,
    settings: DispatchSettings,
    stop: asyncio.Event,
    watch: TransactionWatch,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Transactions back to back while anything is emitted, one starting at most every
    `txn_interval_ms`. A Kafka delivery becomes visible when its transaction commits, so an
    emit must not wait for a loop tick: the committer waits for emits itself. Emits without a
    Kafka delivery (results of REST deliveries, skips, retries) wait for company up to
    `txn_results_interval_ms` after the last transaction began: every transaction costs the
    brokers a marker per partition it wrote, which at 1,000 REST deliveries a second took a
    quarter of a core (services/releaser/README.md, "Performance"). When idle it still wakes
    every `txn_offsets_interval_ms`, for the offsets of skipped or duplicate records (those
    settle without records). `sleep` waits out the spacing (injected with `clock`, so a test
    can drive the spacing by a manual clock)."""
    idle_s = max(settings.txn_offsets_interval_ms, settings.txn_interval_ms) / 1000
    while not stop.is_set():
        started = clock.monotonic_ms()
        watch.started(started)
        await sink.flush()
        watch.finished()
        spacing_ms = settings.txn_interval_ms - (clock.monotonic_ms() - started)
        if spacing_ms > 0:
            await sleep(spacing_ms / 1000)
        if stop.is_set():  # checked with no await before the wait: a wake() cannot be missed
            break
        await sink.wait_for_emits(idle_s)
        company_ms = settings.txn_results_interval_ms - (clock.monotonic_ms() - started)
        if sink.pending and company_ms > 0 and not stop.is_set():
            await _first_of(sink.wait_for_urgent(), sleep(company_ms / 1000))


async def _first_of(*waits: Awaitable[None]) -> None:
    """Until the first of `waits` ends; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
    """Destination topics known to exist, from producer metadata: a topic seen is trusted for
    `ttl_ms` (or until the broker says it is gone), one not seen is asked about every time."""

    def __init__(
        self, producer: Callable[[], Producer], clock: Clock, ttl_ms: float = 60_000
    ) -> None:
        self._producer = producer  # the sink's current one (replaced after a stuck transaction)
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._known: dict[str, float] = {}  # topic -> when it was seen (monotonic ms)

    async def exists(self, topic: str) -> bool:
        seen = self._known.get(topic)
        if seen is not None and self._clock.monotonic_ms() - seen < self._ttl_ms:
            return True
        metadata = await asyncio.to_thread(self._producer().list_topics, topic, 10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            self._known.pop(topic, None)
            return False
        self._known[topic] = self._clock.monotonic_ms()
        return True

    def forget(self, topic: str) -> None:
        self._known.pop(topic, None)
