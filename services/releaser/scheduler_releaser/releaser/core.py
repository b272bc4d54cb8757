"""The releaser: streams stored buckets into the ring before they come due (decision 2).

    tick:
        claim every bucket that starts before now + look-ahead (durable before any listing)
        -> the non-empty buckets from the watermark up to the claim, read from the index after
           the claim (or every bucket, until an upgraded keyspace's index is complete)
        -> per bucket: partitions (read ahead) -> messages into the tick's batch
        -> per batch (every CHUNK messages, and at the end): produce DueMessages to their ring
           topics in one transaction -> commit -> drop the partitions read through -> record
           the release time of the buckets read through -> advance the watermark past them
        -> advance the watermark to the claim; drop the index of the days left behind

Why nothing is stranded: a store re-checks the claim after its row and index entries are
durable. If its re-check missed the claim, the claim was written after the row was durable, so
the index read and the listing, which follow the claim, see the row; otherwise the store sends
the message directly itself (docs/ARCHITECTURE.md, "The release path: claim, index, fencing").

The watermark moves only after every partition of a bucket was produced and dropped, so a crash
repeats at most one batch of buckets (harmless: the dispatcher deduplicates by message id,
generation and attempt, and record writes go by precedence), and never skips one. After
downtime the overdue buckets are released at once, oldest first; their messages go to the
current slot (Ring.topic_for_send) and fire immediately. Empty ranges cost nothing: only indexed
buckets are visited.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Executor, Future
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.clock import Clock
from scheduler.domain.buckets import DAY_MS, bucket_start, buckets_between, index_day
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.settings import SchedulingSettings
from scheduler.store.ports import (
    AppLookup,
    BucketStore,
    LogEntry,
    MessageStore,
    StatusUpdate,
    StatusWrite,
)
from scheduler_releaser.app_gone import gone_reason
from scheduler_releaser.metrics import ReleaseMetrics

log = logging.getLogger(__name__)
CHUNK = 1_000
INDEX_PAGE = 1_000
READ_AHEAD = 16  # partitions being read while the current one is released
SETTLE_AFTER_MS = 1_000  # a batch is settled once its first bucket was read this long ago


class RingPublisher(Protocol):
    def publish(self, message: DueMessage, now_ms: int) -> None:
        """Queue the message for its ring topic."""

    def flush(self) -> None:
        """Return once every queued message is committed; raise if any failed (a fenced
        publisher raises: another releaser leads now)."""


class Releaser:
    def __init__(
        self,
        *,
        clock: Clock,
        scheduling: SchedulingSettings,
        buckets: BucketStore,
        messages: MessageStore,
        apps: AppLookup,
        publisher: RingPublisher,
        writers: Executor,
        metrics: ReleaseMetrics,
        initial_backfill_ms: int,
        tick_budget_ms: int = 5_000,
    ) -> None:
        self._clock = clock
        self._scheduling = scheduling
        self._buckets = buckets
        self._messages = messages
        self._apps = apps
        self._publisher = publisher
        self._writers = writers
        self._metrics = metrics
        self._initial_backfill_ms = initial_backfill_ms
        self._tick_budget_ms = tick_budget_ms

    def tick(self) -> int:
        """Release the buckets that come due within the look-ahead, for at most the tick budget
        (checked between partitions; the rest is the next tick's). Returns buckets released."""
        width = self._scheduling.bucket_width_ms
        now = self._clock.now_ms()
        deadline = self._clock.monotonic_ms() + self._tick_budget_ms
        claim_to = bucket_start(now + self._scheduling.lookahead_ms - 1, width) + width
        progress = self._buckets.watermark()
        indexed = self.index_complete
        if progress == 0 and not indexed:
            # An upgraded keyspace whose releaser never ran: the previous version's rule.
            progress = bucket_start(now - self._initial_backfill_ms, width)
            log.info("no watermark, bucket index incomplete: walking from %d", progress)
        released = 0
        if progress < claim_to:
            # Durable before any index read or listing below: a store that lands after this
            # sees the claim in its re-check and sends its message directly.
            self._buckets.claim(claim_to, now)
            days = {index_day(progress)}
            reached = claim_to  # unless the budget runs out first
            # Shared by the buckets of this tick: a catch-up over many small buckets commits,
            # marks and moves the watermark once per CHUNK messages, not once per bucket.
            batch = _Batch(mark_empty=indexed)
            for bucket in self._candidates(progress, claim_to, indexed):
                started = self._clock.monotonic_ms()
                partitions, count, done = self._release(bucket, deadline, batch)
                if not done:
                    # Out of budget inside the bucket: its dropped partitions are done, the
                    # next tick lists the rest. The watermark stays before it.
                    log.info("tick budget spent in bucket %d (%d read so far)", bucket, count)
                    reached = bucket
                    break
                batch.read_through.append(_ReadThrough(bucket, partitions, count, started))
                days.add(index_day(bucket))
                if self._clock.monotonic_ms() - batch.read_through[0].started_ms >= SETTLE_AFTER_MS:
                    self._settle(batch)  # the most overdue go out now, not at the tick's end
                if self._clock.monotonic_ms() >= deadline:
                    reached = bucket + width
                    break
            self._settle(batch, advance=False)  # the watermark moves to `reached` just below
            released = batch.buckets_released
            self._buckets.advance_watermark(reached, self._clock.now_ms())
            if indexed:
                for day in sorted(days):
                    if (day + 1) * DAY_MS <= reached:  # all its buckets claimed and released
                        self._buckets.forget_day(day)
            progress = max(progress, reached)
        self._metrics.watermark.set(progress)
        self._metrics.behind.set(max(0, now + self._scheduling.lookahead_ms - progress) / 1000)
        return released

    @property
    def index_complete(self) -> bool:
        """Whether the bucket index is complete: read every tick (one point read), since a
        rollback can make it incomplete again."""
        return self._buckets.index_complete()

    def _candidates(self, progress: int, claim_to: int, indexed: bool) -> Iterator[int]:
        """The buckets that may hold messages in [progress, claim_to), ascending."""
        if not indexed:
            yield from buckets_between(progress, claim_to, self._scheduling.bucket_width_ms)
            return
        cursor = progress
        while True:
            page = self._buckets.stored_buckets(cursor, claim_to, INDEX_PAGE)
            yield from page
            if len(page) < INDEX_PAGE:
                return
            cursor = page[-1] + 1

    def _release(self, bucket: int, deadline: float, batch: _Batch) -> tuple[int, int, bool]:
        """Read one claimed bucket into the batch, partition by partition until the deadline:
        (partitions found, messages read for release, whether every partition was read
        through). The batch is settled whenever it holds CHUNK messages; a partition is dropped
        only once every message read from it is committed, and a bucket is marked released only
        once all its partitions are dropped."""
        partitions = self._buckets.partitions(bucket)
        count = 0
        with closing(self._opened(bucket, partitions)) as opened:
            for n, (app_id, shard, gone, rows) in enumerate(opened):
                if n and self._clock.monotonic_ms() >= deadline:
                    return len(partitions), count, False
                for chunk in _chunks(rows, CHUNK):
                    if gone:
                        self._abort(chunk, gone)
                        self._metrics.aborted.inc(len(chunk))
                        continue
                    batch.messages += chunk
                    count += len(chunk)
                    if len(batch.messages) >= CHUNK:
                        self._settle(batch)  # the partition stays until it is read through
                batch.done.append((bucket, app_id, shard))
        return len(partitions), count, True

    def _opened(
        self, bucket: int, partitions: list[tuple[str, int]]
    ) -> Generator[tuple[str, int, str | None, Iterator[DueMessage]], None, None]:
        """The bucket's partitions in order: (app, shard, why its app is gone if it is, its
        messages). The first CHUNK of each partition and each app are read up to READ_AHEAD
        partitions ahead, in the writer threads: one after another, a bucket of many small
        partitions cost two round trips per partition, and a releaser that fell behind caught
        up at barely its own pace (chaos seed 2027, 1 s buckets on the cluster topology).
        Every read still follows the tick's claim, as the release path requires."""

        def app_gone(app_id: str) -> str | None:
            return gone_reason(self._apps.get_app(app_id))

        def first_chunk(app_id: str, shard: int) -> tuple[list[DueMessage], Iterator[DueMessage]]:
            rows = self._buckets.read(bucket, app_id, shard)
            return list(itertools.islice(rows, CHUNK)), rows

        apps: dict[str, Future[str | None]] = {}
        ahead: deque[tuple[str, int, Future[tuple[list[DueMessage], Iterator[DueMessage]]]]]
        ahead = deque()
        waiting = iter(partitions)

        def read_ahead() -> None:
            for app_id, shard in itertools.islice(waiting, READ_AHEAD - len(ahead)):
                if app_id not in apps:  # once per app and bucket, not per shard
                    apps[app_id] = self._writers.submit(app_gone, app_id)
                ahead.append((app_id, shard, self._writers.submit(first_chunk, app_id, shard)))

        try:
            read_ahead()
            while ahead:
                app_id, shard, opening = ahead.popleft()
                first, rest = opening.result()
                read_ahead()
                yield app_id, shard, apps[app_id].result(), itertools.chain(first, rest)
        finally:
            for *_, opening in ahead:
                opening.cancel()

    def _settle(self, batch: _Batch, advance: bool = True) -> None:
        """Commit the batch's messages to the ring, drop the partitions that were read through,
        then mark the buckets read through released and move the watermark past them (unless
        not `advance`: the caller moves it at least as far).
        Nothing is written per message: a record stays READY (stored) and reads as QUEUED once
        the watermark passes its bucket (docs/ARCHITECTURE.md, "Released messages")."""
        if batch.messages:
            now = self._clock.now_ms()
            for message in batch.messages:
                self._publisher.publish(message, now)
            self._publisher.flush()  # committed in the ring before its partitions are dropped
            self._metrics.released.inc(len(batch.messages))
            batch.messages = []
        if batch.done:
            drop = self._buckets.drop_partition
            # list() waits for every drop and re-raises the first failure.
            list(self._writers.map(lambda p: drop(*p), batch.done))
            batch.done = []
        if batch.read_through:
            now = self._clock.now_ms()
            # Before the watermark passes them (a crash in between repeats them): the time
            # readers give their messages' "released" log entries.
            marked = [b.bucket for b in batch.read_through if b.partitions or batch.mark_empty]
            list(self._writers.map(lambda b: self._buckets.mark_released(b, now), marked))
            if advance:
                width = self._scheduling.bucket_width_ms
                self._buckets.advance_watermark(batch.read_through[-1].bucket + width, now)
            for read in batch.read_through:
                if read.partitions:
                    elapsed_s = (self._clock.monotonic_ms() - read.started_ms) / 1000
                    self._metrics.release_duration.observe(elapsed_s)
                    log.info("released bucket %d: %d messages", read.bucket, read.messages)
                    batch.buckets_released += 1
            batch.read_through = []

    def _abort(self, chunk: list[DueMessage], reason: str) -> None:
        now = self._clock.now_ms()

        def record(m: DueMessage) -> StatusWrite:
            state = StatusUpdate(Status.ABORTED, m.generation, m.attempt, m.due_ms, now)
            data: dict[str, object] = {"reason": reason}
            entry = LogEntry(now, f"{m.generation}:{m.attempt}:aborted", Status.ABORTED, data)
            return StatusWrite(m.app_id, m.message_id, state, entry)

        self._messages.update_statuses([record(m) for m in chunk])


@dataclass
class _ReadThrough:
    """A bucket whose partitions are all read (into the batch, or committed and dropped)."""

    bucket: int
    partitions: int
    messages: int  # read for release (not those of a deleted app, aborted instead)
    started_ms: float


@dataclass
class _Batch:
    """What a tick read and has not settled yet: messages not yet committed, partitions
    (bucket, app, shard) read through, and buckets read through."""

    mark_empty: bool  # mark a bucket released even without partitions (the index listed it)
    messages: list[DueMessage] = field(default_factory=list)
    done: list[tuple[int, str, int]] = field(default_factory=list)
    read_through: list[_ReadThrough] = field(default_factory=list)
    buckets_released: int = 0


def _chunks(items: Iterator[DueMessage], size: int) -> Iterator[list[DueMessage]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
