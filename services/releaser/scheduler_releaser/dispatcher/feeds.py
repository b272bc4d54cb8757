"""Kafka inputs of the dispatcher: the ring, the commands view and the results reload.

All confluent-kafka consumer calls happen on the event-loop thread with timeout 0 (never
blocking it), except the startup reads, which run before firing begins.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from scheduler.clock import Clock
from scheduler.codec import DecodeError
from scheduler.kafka.consume import consume_available
from scheduler.records import RejectedRequest
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.metrics import DispatchMetrics
from scheduler_releaser.settings import DispatchSettings

from .commands import CommandView
from .core import Dispatcher
from .offsets import TP, OffsetTracker
from .ownership import owns
from .pace import QUIET_CONFIRM_S, QUIET_PROGRESS_S, Pace
from .ports import OutRecord, Sink
from .records_progress import RecordsProgress
from .timers import PARKED_HEADER, Position, TimerQueue

log = logging.getLogger(__name__)
TIMEOUT_S = 30.0
LISTED_MAX = 10  # partitions named in one log line
PROBE_RETRY_MS = 1_000  # a draining partition's end is asked again this often


def consumer_config(kafka: KafkaSettings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        **kafka.client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        **extra,
    }


def start_offsets(consumer: Consumer, tps: list[TopicPartition], since_ms: int) -> None:
    """Set each partition's offset to the first record at or after `since_ms`, else to its end
    (resolved to a number: a position must be known before the first fetch).

    The end is asked first: a record appended between the two questions is then at or after
    that end, so it is read. (Asked second, it would lie before the start: a new partition's
    first record, or a command written at startup, was skipped this way.)"""
    if not tps:  # librdkafka refuses an empty query (_INVALID_ARG)
        return
    ends = end_offsets(consumer, tps, TIMEOUT_S)
    query = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in tps]
    found = {
        (tp.topic, tp.partition): tp.offset for tp in consumer.offsets_for_times(query, TIMEOUT_S)
    }
    for tp in tps:
        key = (tp.topic, tp.partition)
        tp.offset = found.get(key, -1)
        if tp.offset < 0:
            tp.offset = ends[key]


def end_offsets(consumer: Consumer, tps: list[TopicPartition], timeout_s: float) -> dict[TP, int]:
    """Each partition's end for a read_committed reader (the last stable offset), in one
    request per broker. Blocking: call it from a worker thread once firing has begun."""
    if not tps:
        return {}
    query = [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in tps]
    return {
        (tp.topic, tp.partition): tp.offset for tp in consumer.offsets_for_times(query, timeout_s)
    }


def future_slots(scheduling: SchedulingSettings) -> int:
    """How many slots ahead of the current one may hold not-yet-due records (see README)."""
    span = scheduling.lookahead_ms + scheduling.placement_margin_ms + scheduling.bucket_width_ms
    return min(scheduling.ring_size - 1, math.ceil(span / scheduling.ring_slot_ms) + 1)


def paused_slots(current_slot: int, scheduling: SchedulingSettings) -> set[int]:
    """Decision 4: the current and next slots are consumed; so are the slots behind (records
    there are late: after an outage, or written late); the future ones stay in Kafka."""
    size = scheduling.ring_size
    return {(current_slot + k) % size for k in range(2, future_slots(scheduling) + 1)}


def _metadata_ms(tp: TopicPartition) -> int | None:
    """The instant a committed offset's metadata names (None: not committed, or no metadata)."""
    if tp.offset >= 0 and tp.metadata and tp.metadata.isdigit():
        return int(tp.metadata)
    return None


class RingFeed:
    """The ring partitions this instance owns (ownership.py), read so that no unsettled record
    is ever skipped:

    - A partition with a committed offset starts there. One without (never committed, offset
      expired, newly added) starts at its first retained record: everything in it may be
      unsettled, and the results and records stop a settled one from being delivered again.
    - Partitions are listed again every `metadata_refresh_ms`; new ones are added while running.
    - Future slots are paused once a probe (the partition's end, asked after the slot became
      future) shows nothing unread is left in them: late records are drained first. After a
      time jump longer than a slot (a frozen process) every future slot is probed again.

    No blocking Kafka call runs on the event loop: probes and listings run in worker threads,
    and through `asker`, a client of their own. confluent-kafka lets one call at a time into a
    consumer, and a question on the ring consumer's connection waits behind its long-polled
    fetch: a probe asked there held the loop's next poll for the fetch wait at every slot start.
    For the same reason only the loop's own turn calls the ring consumer (poll, pause, resume,
    position, assign): a probe's or a listing's answer is kept and applied at the next turn. A
    task that applied it while the loop sat in a quiet wait held the event loop (the committer,
    the deliveries in flight) until that wait's consume returned.
    """

    def __init__(
        self,
        consumer: Consumer,
        *,
        topics: Topics,
        scheduling: SchedulingSettings,
        settings: DispatchSettings,
        clock: Clock,
        tracker: OffsetTracker,
        dispatcher: Dispatcher,
        codecs: Codecs,
        sink: Sink,
        metrics: DispatchMetrics,
        asker: Consumer,
    ) -> None:
        """`asker`: the client of the questions (listings, committed and end offsets), in the
        ring consumer's group but never assigned anything."""
        self._consumer = consumer
        self._asker = asker
        self._topics = topics
        self._scheduling = scheduling
        self._settings = settings
        self._clock = clock
        self._tracker = tracker
        self._dispatcher = dispatcher
        self._codecs = codecs
        self._sink = sink
        self._metrics = metrics
        self._assigned: dict[TP, int] = {}  # offset each partition was assigned at
        self._paused: set[TP] = set()
        self._draining: dict[TP, int] = {}  # future partition -> when it started draining
        self._slot: int | None = None
        self._rotated_ms: int | None = None
        self._probe: asyncio.Task[None] | None = None
        self._probe_answer: tuple[int, dict[TP, int]] | None = None  # (asked at, ends)
        self._probed_ms = 0
        self._listed_ms = 0
        self._sizes: dict[str, int] | None = None  # partitions of each ring topic, first listed
        self._listing: asyncio.Task[None] | None = None
        self._listed_new: list[TopicPartition] = []  # positioned, not yet assigned
        self._waiting: asyncio.Future[list[Message]] | None = None  # wait()'s consume
        # wait()'s consume has a thread of its own: in the shared default pool it could queue
        # behind slow metadata questions and hold a quiet loop far past its timeout.
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="ring-wait")

    @property
    def cycle_ms(self) -> int:
        return self._topics.ring.cycle_ms

    @property
    def partitions(self) -> int:
        return len(self._assigned)

    def owned(self, timeout_s: float = TIMEOUT_S) -> list[TopicPartition]:
        """This instance's ring partitions, from a fresh metadata request (blocking)."""
        metadata = self._asker.list_topics(timeout=timeout_s).topics
        mine: list[TopicPartition] = []
        s = self._settings
        sizes: dict[str, int] = {}
        for topic in self._topics.ring.topics():
            if topic not in metadata:
                raise RuntimeError(f"ring topic {topic} is missing: run `scheduler setup`")
            sizes[topic] = len(metadata[topic].partitions)
            for partition in sorted(metadata[topic].partitions):
                if owns(partition, s.instance, s.instances):
                    mine.append(TopicPartition(topic, partition))
        if self._sizes is None:
            self._sizes = sizes
        elif sizes != self._sizes:
            # Messages' keys now map to other partitions, some owned by other instances.
            log.warning(
                "the ring's partition counts changed (%s): until this dispatcher restarts, every"
                " attempt reads its message record before it fires",
                ", ".join(f"{t} {self._sizes.get(t)}->{n}" for t, n in sizes.items()),
            )
            self._sizes = sizes
            self._dispatcher.ring_repartitioned()
        return mine

    def start(self, now_ms: int, slack_ms: int) -> int:
        """Assign the owned ring partitions (blocking: runs before firing begins).

        Returns the instant from which delivery results matter: the oldest commit metadata
        less `slack_ms` (clock skew between this host and the producers' timestamps)."""
        tps = self._positioned(self.owned())
        committed = {(tp.topic, tp.partition): _metadata_ms(tp) for tp in tps}
        since = min((ms for ms in committed.values() if ms is not None), default=now_ms) - slack_ms
        ends = end_offsets(self._asker, tps, TIMEOUT_S)
        self._consumer.assign(tps)
        for tp in tps:
            key = (tp.topic, tp.partition)
            # An earlier incarnation may have settled records up to the end seen now. The floor
            # is the metadata itself (no slack): each restart takes the slack off once, so
            # back-to-back restarts do not push it back by another slack each time.
            floor = committed[key]
            self._add(tp, since + slack_ms if floor is None else floor, ends.get(key, 0))
        self._rotated_ms = None
        self._listed_ms = now_ms
        self.rotate(now_ms)
        asked = self._clock.now_ms()
        self._apply_ends(asked, self._ends(list(self._draining)))
        self._probed_ms = asked
        log.info(
            "ring partitions: %d assigned (%d draining, %d paused); results matter since %d",
            len(tps),
            len(self._draining),
            len(self._paused),
            since,
        )
        return since

    def _positioned(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """`tps` at their committed offsets, or at their first retained record (blocking)."""
        committed = self._asker.committed(tps, timeout=TIMEOUT_S)
        fresh = [tp for tp in committed if tp.offset < 0]
        start_offsets(self._asker, fresh, 0)
        if fresh:  # one line: a first start has hundreds of them
            named = [f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in fresh]
            more = f" and {len(named) - LISTED_MAX} more" if len(named) > LISTED_MAX else ""
            log.info(
                "%d ring partitions have no committed offset, read from their first retained"
                " record: %s%s",
                len(fresh),
                ", ".join(named[:LISTED_MAX]),
                more,
            )
        return committed

    def _add(self, tp: TopicPartition, floor_ms: int | None, floor_until: int) -> None:
        self._assigned[(tp.topic, tp.partition)] = tp.offset
        self._tracker.start_at(tp.topic, tp.partition, tp.offset, floor_ms, floor_until)

    def refresh(self, now_ms: int) -> None:
        """Every `metadata_refresh_ms`: list the ring partitions (a task: the loop goes on);
        assign what the last listing found."""
        if self._listed_new:
            self._assign(self._listed_new)
            self._listed_new = []
        if (
            self._listing is not None
            or now_ms - self._listed_ms < self._settings.metadata_refresh_ms
        ):
            return
        self._listed_ms = now_ms
        self._listing = asyncio.get_running_loop().create_task(self._list_new_partitions())

    async def _list_new_partitions(self) -> None:
        """Find the ring partitions added since the last listing, positioned at their first
        record (the loop's next refresh assigns them)."""
        try:
            owned = await asyncio.to_thread(self.owned, 10.0)
            new = [tp for tp in owned if (tp.topic, tp.partition) not in self._assigned]
            if new:
                self._listed_new = await asyncio.to_thread(self._positioned, new)
        except (KafkaException, RuntimeError) as exc:
            log.warning("listing the ring partitions failed (%s); retrying later", exc)
        finally:
            self._listing = None

    def _assign(self, new: list[TopicPartition]) -> None:
        self._consumer.incremental_assign(new)
        for tp in new:
            self._add(tp, None, 0)  # a new partition: no earlier incarnation read it
        self._slot = None  # rotate() decides their pause state
        log.info(
            "ring partitions added while running: %s",
            ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in new),
        )

    def rotate(self, now_ms: int) -> None:
        """At each slot boundary: resume the slots that stop being future, start draining the
        ones that become future (they are paused once probed empty)."""
        slot = self._topics.ring.slot_of(now_ms)
        gap = 0 if self._rotated_ms is None else now_ms - self._rotated_ms
        self._rotated_ms = now_ms
        jumped = gap > self._topics.ring.slot_ms
        if jumped:
            log.warning(
                "%d ms since the last rotation (a long startup, or a frozen process): every"
                " future slot is checked for overdue records",
                gap,
            )
        if slot != self._slot or jumped:
            self._slot = slot
            future = {
                self._topics.ring.topic_for_slot(s) for s in paused_slots(slot, self._scheduling)
            }
            want = {key for key in self._assigned if key[0] in future}
            to_resume = [TopicPartition(*k) for k in self._paused - want]
            recheck = want if jumped else want - self._paused - set(self._draining)
            to_resume += [TopicPartition(*k) for k in recheck & self._paused]
            if to_resume:
                self._consumer.resume(to_resume)
            self._paused &= want
            self._paused -= recheck
            self._draining = {k: t for k, t in self._draining.items() if k in want}
            for key in recheck:
                self._draining[key] = now_ms

    def probe(self, now_ms: int) -> None:
        """Ask the ends of the draining partitions (in a worker thread), at once for partitions
        that started draining since the last probe, else every PROBE_RETRY_MS; apply the last
        probe's answer."""
        if self._probe_answer is not None:
            asked_ms, ends = self._probe_answer
            self._probe_answer = None
            self._apply_ends(asked_ms, ends)
        if not self._draining or self._probe is not None:
            return
        fresh = any(t >= self._probed_ms for t in self._draining.values())
        if fresh or now_ms - self._probed_ms >= PROBE_RETRY_MS:
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())

    async def _run_probe(self) -> None:
        asked = self._clock.now_ms()
        try:
            self._probe_answer = (asked, await asyncio.to_thread(self._ends, list(self._draining)))
        except KafkaException as exc:
            # Kafka unreachable (a broker restart): the partitions stay resumed and are probed
            # again; pausing one could strand late records.
            log.warning("ring partition ends unknown (%s): kept draining", exc)
        finally:
            self._probed_ms = asked
            self._probe = None

    def _ends(self, keys: list[TP]) -> dict[TP, int]:
        return end_offsets(self._asker, [TopicPartition(*k) for k in keys], 10.0)

    def _apply_ends(self, asked_ms: int, ends: dict[TP, int]) -> None:
        """Pause the draining partitions that have read everything up to an end asked for after
        they started draining."""
        done = []
        for key, end in ends.items():
            since = self._draining.get(key)
            if since is None or since > asked_ms or end < 0:
                continue
            [position] = self._consumer.position([TopicPartition(*key)])
            offset = position.offset if position.offset >= 0 else self._assigned[key]
            if offset >= end:
                done.append(key)
        if done:
            self._consumer.pause([TopicPartition(*k) for k in done])
            for key in done:
                del self._draining[key]
                self._paused.add(key)

    def poll(self, limit: int = 500) -> int:
        if self._waiting is not None:
            # A wait given up mid-way (cancelled): its consume is the only one that runs, and
            # the records it returned come first.
            return self._take(self._collect()) if self._waiting.done() else 0
        if self._held_full():
            return 0
        return self._take(self._consumer.consume(num_messages=limit, timeout=0))

    async def wait(
        self, timeout_s: float, limit: int = 500, until: asyncio.Future[Any] | None = None
    ) -> int:
        """Like poll, but a worker thread blocks in the consume for up to `timeout_s`: a quiet
        loop wakes as soon as a record is fetched instead of ticking to look (ARCHITECTURE.md,
        "Idle cost"). It also returns (0) as soon as `until` is done: the loop must see a failed
        committer at once. A wait that returns early, or is cancelled, leaves its consume to
        finish; the next poll or wait takes what it returned, so no record it read is dropped."""
        also = [] if until is None else [until]
        if self._waiting is None and self._held_full():
            pause = asyncio.ensure_future(asyncio.sleep(timeout_s))
            await asyncio.wait([pause, *also], return_when=asyncio.FIRST_COMPLETED)
            pause.cancel()
            return 0
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().run_in_executor(
                self._waiter, consume_available, self._consumer, limit, timeout_s
            )
        await asyncio.wait([self._waiting, *also], return_when=asyncio.FIRST_COMPLETED)
        if not self._waiting.done():
            return 0
        return self._take(self._collect())

    async def finish_wait(self) -> None:
        """Before the consumer closes: no consume may still run in a worker thread."""
        if self._waiting is not None:
            await asyncio.wait([self._waiting])
        self._waiter.shutdown(wait=False)

    def _held_full(self) -> bool:
        # backpressure: librdkafka stops fetching once its queue is full
        return len(self._dispatcher.timers) >= self._settings.max_held

    def _collect(self) -> list[Message]:
        waiting, self._waiting = self._waiting, None
        assert waiting is not None
        return waiting.result()

    def _take(self, messages: list[Message]) -> int:
        now = self._clock.now_ms()
        for msg in messages:
            self._handle(msg, now)
        self._metrics.ring_lag.set(self._tracker.unsettled())
        return len(messages)

    def report(self) -> None:
        """The partition-state gauges (the loop calls it every few seconds)."""
        gauge = self._metrics.ring_partitions
        gauge.labels("paused").set(len(self._paused))
        gauge.labels("draining").set(len(self._draining))
        gauge.labels("active").set(len(self._assigned) - len(self._paused) - len(self._draining))

    def _handle(self, msg: Message, now_ms: int) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("ring consumer error: %s", error)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        position = Position(topic, partition, offset)
        self._tracker.received(topic, partition, offset, now_ms)
        value = msg.value() or b""
        try:
            due = self._codecs.due.decode(value)
        except DecodeError as exc:
            self._metrics.rejected.inc()
            rejected = RejectedRequest(
                reason="undecodable_due_message",
                detail=str(exc)[:1000],
                original=value,
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
                rejected_ms=now_ms,
            )
            out = OutRecord(self._topics.rejected, self._codecs.rejected.encode(rejected))
            self._sink.emit([out], position)
            return
        self._dispatcher.accept(due, position, parked_uncounted_ms(msg.headers()))


Headers = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None


def parked_uncounted_ms(headers: Headers) -> int | None:
    """The PARKED_HEADER of a ring record: None for any record but a parked attempt's copy (or
    a header that is not a count: the record is then an ordinary copy of its attempt)."""
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in items:
        if name == PARKED_HEADER and value is not None:
            try:
                return max(0, int(value))
            except ValueError:
                return None
    return None


class CommandsFeed:
    """Every dispatcher instance reads every commands partition (no group, no commits).

    `confirm()` (a task of the loop) asks Kafka, every `commands_confirm_ms` and in a worker
    thread, for the topic's partitions and their ends: new partitions are read from their start,
    and the view counts a partition fresh as of the question once it has read up to the answer
    (commands.py). How far it has read is the consumer's position, not a partition EOF: the
    position passes a transaction's marker as soon as it is read, while an EOF comes only with
    the next empty fetch, so the fetch wait had to be a few ms (200 fetches a second on an idle
    system; ARCHITECTURE.md, "Idle cost"). The questions go through `asker`, a client of their
    own: a broker answers the requests of one connection in order, so on the reading
    consumer's connection each waited behind its long-polled fetch (the view then aged by the
    fetch wait). No Kafka call here blocks the event loop."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        view: CommandView,
        codecs: Codecs,
        clock: Clock,
        confirm_ms: int,
        asker: Consumer | None = None,
        on_lag: Callable[[float], None] = lambda _: None,
    ) -> None:
        """`on_lag`: the view's lag in seconds after each confirmation (a gauge)."""
        self._consumer = consumer
        self._asker = asker or consumer
        self._topic = topic
        self.view = view
        self._codecs = codecs
        self._clock = clock
        self._confirm_ms = confirm_ms
        self._on_lag = on_lag
        self._assigned: list[TopicPartition] = []

    def start(self, since_ms: int) -> None:
        """Assign every partition at the first command since `since_ms` (blocking)."""
        tps = [TopicPartition(self._topic, p) for p in self._partitions(TIMEOUT_S)]
        start_offsets(self._asker, tps, since_ms)
        self._consumer.assign(tps)
        self._add(tps)

    def close(self) -> None:
        self._consumer.close()
        if self._asker is not self._consumer:
            self._asker.close()

    def _add(self, tps: list[TopicPartition]) -> None:
        self.view.add_partitions(tp.partition for tp in tps)
        for tp in tps:
            self.view.starts_at(tp.partition, tp.offset)
        self._assigned += [TopicPartition(self._topic, tp.partition) for tp in tps]

    def _partitions(self, timeout_s: float) -> list[int]:
        metadata = self._asker.list_topics(self._topic, timeout=timeout_s).topics[self._topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def poll(self, limit: int = 500) -> int:
        messages = self._consumer.consume(num_messages=limit, timeout=0)
        for msg in messages:
            partition = msg.partition() or 0
            offset = msg.offset() or 0
            error = msg.error()
            if error is not None:
                log.warning("commands consumer error: %s", error)
                continue
            try:
                command = self._codecs.command.decode(msg.value() or b"")
            except DecodeError:
                log.warning("undecodable command at %s/%s", partition, offset)
                command = None
            self.view.apply(partition, offset, command)
        # Local: what this consumer has handed out, past the markers it has read (never ahead
        # of a record not yet returned by consume).
        for tp in self._consumer.position(self._assigned):
            if tp.offset >= 0:
                self.view.read_to(tp.partition, tp.offset)
        return len(messages)

    async def confirm_once(self) -> None:
        """One question to Kafka: the partitions, and where each ends."""
        asked = self._clock.now_ms()
        partitions, ends = await asyncio.to_thread(self._ends)
        known = set(self.view.partitions)
        new = [p for p in partitions if p not in known]
        if new:
            tps = [TopicPartition(self._topic, p) for p in new]
            await asyncio.to_thread(start_offsets, self._asker, tps, 0)
            self._consumer.incremental_assign(tps)
            self._add(tps)
            log.info("commands partitions added while running: %s", new)
        for partition, end in ends.items():
            self.view.confirm(partition, asked, end)

    def _ends(self) -> tuple[list[int], dict[int, int]]:
        partitions = self._partitions(5.0)
        tps = [TopicPartition(self._topic, p) for p in partitions]
        return partitions, {p: end for (_, p), end in end_offsets(self._asker, tps, 5.0).items()}

    async def confirm(self, stop: asyncio.Event, pace: Pace | None = None) -> None:
        """Confirm the view every `confirm_ms` until `stop` (a task of the loop); while `pace`
        is quiet, every QUIET_CONFIRM_S, and at once when it leaves quiet (pace.py)."""
        pace = pace or Pace()
        while not stop.is_set():
            ticket = pace.ticket()
            started = self._clock.monotonic_ms()
            try:
                await self.confirm_once()
            except KafkaException as exc:
                log.warning("commands view not confirmed (%s): it ages until Kafka answers", exc)
            self._on_lag(self.view.lag_ms(self._clock.now_ms()) / 1000)
            spent = self._clock.monotonic_ms() - started
            await pace.wait(
                ticket,
                spent / 1000,
                stop,
                active_s=self._confirm_ms / 1000,
                quiet_s=QUIET_CONFIRM_S,
            )

    async def catch_up(self, timeout_ms: int) -> bool:
        """Read until every partition is confirmed current (before firing begins)."""
        started = self._clock.now_ms()
        deadline = self._clock.monotonic_ms() + timeout_ms
        while self._clock.monotonic_ms() < deadline:
            while self.poll():
                pass
            try:
                await self.confirm_once()
            except KafkaException as exc:
                log.warning("commands view not confirmed yet (%s)", exc)
            self.poll()
            if self.view.fresh_since(started):
                return True
            await asyncio.sleep(0.01)
        return False


def partition_count(consumer: Consumer, topic: str) -> int | None:
    """The topic's partition count; None when the brokers do not know the topic."""
    metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        log.warning("topic %s unknown to the brokers: its records go by key", topic)
        return None
    return len(metadata.partitions)


def load_results(
    consumer: Consumer, topic: str, since_ms: int, timers: TimerQueue, codecs: Codecs
) -> int:
    """Decision 6: before firing, remember every attempt settled since `since_ms` (read to the
    end, read_committed), so a re-read ring record of a settled attempt is not fired again."""
    metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
    tps = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    start_offsets(consumer, tps, since_ms)
    ends = {}
    for tp in tps:
        _, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
        ends[tp.partition] = high
    active = {tp.partition for tp in tps if tp.offset < ends[tp.partition]}
    consumer.assign([tp for tp in tps if tp.partition in active])
    loaded = 0
    while active:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            partition = msg.partition() or 0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    active.discard(partition)
                continue
            try:
                result = codecs.result.decode(msg.value() or b"")
            except DecodeError:
                continue
            key = (result.app_id, result.message_id, result.generation, result.attempt)
            timers.remember(key, result.due_ms)
            loaded += 1
            if (msg.offset() or 0) + 1 >= ends[partition]:
                active.discard(partition)
    consumer.unassign()
    return loaded


class RecordsProgressFeed:
    """Asks Kafka every `interval_ms`, in a worker thread, and feeds a RecordsProgress."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        progress: RecordsProgress,
        clock: Clock,
        on_lag: Callable[[float], None],
        interval_ms: int = 1_000,
    ) -> None:
        """`consumer`: configured with the record writers' group id; it never joins the group
        (it only reads the group's committed offsets)."""
        self._consumer = consumer
        self._topic = topic
        self.progress = progress
        self._clock = clock
        self._on_lag = on_lag
        self._interval_s = interval_ms / 1000

    def ask_once(self) -> None:
        """Blocking: the ends at the instant asked, then the committed offsets."""
        metadata = self._consumer.list_topics(self._topic, timeout=TIMEOUT_S).topics[self._topic]
        tps = [TopicPartition(self._topic, p) for p in sorted(metadata.partitions)]
        asked_ms = self._clock.now_ms()
        ends: dict[int, int] = {}
        for (_, partition), end in end_offsets(self._consumer, tps, TIMEOUT_S).items():
            low, _ = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=TIMEOUT_S, cached=False
            )
            if end > low:  # nothing retained there: nothing to write
                ends[partition] = end
        committed = {
            tp.partition: tp.offset
            for tp in self._consumer.committed(tps, timeout=TIMEOUT_S)
            if tp.offset >= 0
        }
        self.progress.observe(asked_ms, ends, committed)

    async def run(self, stop: asyncio.Event, pace: Pace | None = None) -> None:
        """Ask every `interval_ms` until `stop`; while `pace` is quiet, every QUIET_PROGRESS_S,
        and at once when it leaves quiet (pace.py)."""
        pace = pace or Pace()
        while not stop.is_set():
            ticket = pace.ticket()
            started = self._clock.monotonic_ms()
            try:
                await asyncio.to_thread(self.ask_once)
            except Exception as exc:  # noqa: BLE001 - Kafka unreachable: the progress ages
                log.warning("record writers' progress not known (%s)", exc)
            self._on_lag(self.progress.lag_ms(self._clock.now_ms()) / 1000)
            spent_s = (self._clock.monotonic_ms() - started) / 1000
            await pace.wait(
                ticket, spent_s, stop, active_s=self._interval_s, quiet_s=QUIET_PROGRESS_S
            )
