"""The releaser: streams stored buckets into the ring before they come due (decision 2).

    tick:
        claim every bucket that starts before now + look-ahead (durable before any listing)
        -> the non-empty buckets from the watermark up to the claim, read from the index after
           the claim (or every bucket, until an upgraded keyspace's index is complete)
        -> per bucket: partitions -> per partition, in chunks: read -> produce DueMessages to
           their ring topics in one transaction -> commit -> drop the partition -> (all
           partitions done) record the bucket's release time -> advance the watermark
        -> advance the watermark to the claim; drop the index of the days left behind

Why nothing is stranded: a store re-checks the claim after its row and index entries are
durable. If its re-check missed the claim, the claim was written after the row was durable, so
the index read and the listing, which follow the claim, see the row; otherwise the store sends
the message directly itself (docs/ARCHITECTURE.md, "The release path: claim, index, fencing").

The watermark moves only after every partition of a bucket was produced and dropped, so a crash
repeats at most one bucket (harmless: the dispatcher deduplicates by message id, generation and
attempt, and record writes go by precedence), and never skips one. After downtime the overdue
buckets are released at once, oldest first; their messages go to the current slot
(Ring.topic_for_send) and fire immediately. Empty ranges cost nothing: only indexed buckets are
visited.
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
            for bucket in self._candidates(progress, claim_to, indexed):
                started = self._clock.monotonic_ms()
                partitions, count, done = self._release(bucket, deadline)
                if not done:
                    # Out of budget inside the bucket: its dropped partitions are done, the
                    # next tick lists the rest. The watermark stays before it.
                    log.info("tick budget spent in bucket %d (%d released so far)", bucket, count)
                    reached = bucket
                    break
                if partitions or indexed:
                    # Before the watermark passes it (a crash in between repeats the bucket):
                    # the time readers give its messages' "released" log entries.
                    self._buckets.mark_released(bucket, self._clock.now_ms())
                if partitions:
                    self._buckets.advance_watermark(bucket + width, self._clock.now_ms())
                    elapsed_s = (self._clock.monotonic_ms() - started) / 1000
                    self._metrics.release_duration.observe(elapsed_s)
                    log.info("released bucket %d: %d messages", bucket, count)
                    released += 1
                days.add(index_day(bucket))
                if self._clock.monotonic_ms() >= deadline:
                    reached = bucket + width
                    break
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

    def _release(self, bucket: int, deadline: float) -> tuple[int, int, bool]:
        """Release one claimed bucket, partition by partition until the deadline: (partitions
        found, messages released, whether every partition was released).

        Messages of several partitions share a transaction (up to CHUNK of them): a bucket of
        many small partitions costs one commit per CHUNK messages, not one per partition. A
        partition is dropped only once every message read from it is committed and marked."""
        batch = _Batch()
        partitions = self._buckets.partitions(bucket)
        with closing(self._opened(bucket, partitions)) as opened:
            for n, (app_id, shard, gone, rows) in enumerate(opened):
                if n and self._clock.monotonic_ms() >= deadline:
                    self._settle(bucket, batch)
                    return len(partitions), batch.released, False
                for chunk in _chunks(rows, CHUNK):
                    if gone:
                        self._abort(chunk, gone)
                        self._metrics.aborted.inc(len(chunk))
                        continue
                    batch.messages += chunk
                    if len(batch.messages) >= CHUNK:
                        self._settle(bucket, batch)  # the partition stays until read through
                batch.done.append((app_id, shard))
        self._settle(bucket, batch)
        return len(partitions), batch.released, True

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

    def _settle(self, bucket: int, batch: _Batch) -> None:
        """Commit the batch's messages to the ring, drop the partitions that were read through.
        Nothing is written per message: a record stays READY (stored) and reads as QUEUED once
        the watermark passes its bucket (docs/ARCHITECTURE.md, "Released messages")."""
        if batch.messages:
            now = self._clock.now_ms()
            for message in batch.messages:
                self._publisher.publish(message, now)
            self._publisher.flush()  # committed in the ring before its partitions are dropped
            self._metrics.released.inc(len(batch.messages))
            batch.released += len(batch.messages)
            batch.messages = []
        if batch.done:
            drop = self._buckets.drop_partition
            # list() waits for every drop and re-raises the first failure.
            list(self._writers.map(lambda p: drop(bucket, *p), batch.done))
            batch.done = []

    def _abort(self, chunk: list[DueMessage], reason: str) -> None:
        now = self._clock.now_ms()

        def record(m: DueMessage) -> StatusWrite:
            state = StatusUpdate(Status.ABORTED, m.generation, m.attempt, m.due_ms, now)
            data: dict[str, object] = {"reason": reason}
            entry = LogEntry(now, f"{m.generation}:{m.attempt}:aborted", Status.ABORTED, data)
            return StatusWrite(m.app_id, m.message_id, state, entry)

        self._messages.update_statuses([record(m) for m in chunk])


@dataclass
class _Batch:
    """Messages read from a bucket and not yet committed, and the partitions read through."""

    messages: list[DueMessage] = field(default_factory=list)
    done: list[tuple[str, int]] = field(default_factory=list)
    released: int = 0


def _chunks(items: Iterator[DueMessage], size: int) -> Iterator[list[DueMessage]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
