"""The releaser: streams stored buckets into the ring before they come due (decision 2).

    tick: for each bucket from the watermark up to now + look-ahead, in order:
        partitions(bucket) -> per partition, in chunks: read -> produce DueMessages to their
        ring topics -> flush (acked) -> mark records QUEUED + log "released"
        -> drop the partition -> (all partitions done) advance the watermark past the bucket

The watermark is advanced only after every partition of the bucket was produced and dropped,
so a crash repeats at most one bucket (harmless: the dispatcher deduplicates by message id,
generation and attempt, and record writes go by precedence), and never skips one. After
downtime the overdue buckets are released at once, oldest first; their messages go to the
current slot (Ring.topic_for_send) and fire immediately.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Protocol

from scheduler.clock import Clock
from scheduler.domain.buckets import bucket_start
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.settings import SchedulingSettings
from scheduler.store.ports import AppLookup, BucketStore, LogEntry, MessageStore, StatusUpdate

from .metrics import ReleaseMetrics

log = logging.getLogger(__name__)
CHUNK = 1_000


class RingPublisher(Protocol):
    def publish(self, message: DueMessage, now_ms: int) -> None:
        """Queue the message for its ring topic."""

    def flush(self) -> None:
        """Return once every queued message is acknowledged; raise if any failed."""


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

    def tick(self) -> int:
        """Release every bucket that comes due within the look-ahead. Returns buckets released."""
        width = self._scheduling.bucket_width_ms
        now = self._clock.now_ms()
        target = now + self._scheduling.lookahead_ms
        watermark = self._buckets.watermark()
        if watermark == 0:
            # First run of a deployment: nothing older than the past window can be stored.
            watermark = bucket_start(now - self._initial_backfill_ms, width)
            log.info("no watermark yet: starting at %d", watermark)
        bucket = bucket_start(watermark, width)
        released = 0
        while bucket < target:
            started = self._clock.monotonic_ms()
            count = self.release_bucket(bucket)
            self._buckets.advance_watermark(bucket + width, self._clock.now_ms())
            self._metrics.release_duration.observe((self._clock.monotonic_ms() - started) / 1000)
            if count:
                log.info("released bucket %d: %d messages", bucket, count)
            bucket += width
            released += 1
        self._metrics.watermark.set(bucket)
        self._metrics.behind.set(max(0, target - bucket - width) / 1000)
        return released

    def release_bucket(self, bucket: int) -> int:
        total = 0
        for app_id, shard in self._buckets.partitions(bucket):
            app = self._apps.get_app(app_id)
            deleted = app is None or app.deleted_ms is not None
            for chunk in _chunks(self._buckets.read(bucket, app_id, shard), CHUNK):
                if deleted:
                    self._mark(chunk, Status.ABORTED)
                    self._metrics.aborted.inc(len(chunk))
                    continue
                now = self._clock.now_ms()
                for message in chunk:
                    self._publisher.publish(message, now)
                self._publisher.flush()  # durable in the ring before the record says QUEUED
                self._mark(chunk, Status.QUEUED)
                self._metrics.released.inc(len(chunk))
                total += len(chunk)
            self._buckets.drop_partition(bucket, app_id, shard)
        return total

    def _mark(self, chunk: list[DueMessage], status: Status) -> None:
        now = self._clock.now_ms()
        event = "released" if status is Status.QUEUED else "aborted"
        data: dict[str, object] = (
            {} if status is Status.QUEUED else {"reason": "application deleted"}
        )

        def write(m: DueMessage) -> None:
            state = StatusUpdate(status, m.generation, m.attempt, m.due_ms, now)
            entry = LogEntry(now, f"{m.generation}:{m.attempt}:{event}", status, data)
            self._messages.update_status(m.app_id, m.message_id, state, entry)

        # list() waits for every write and re-raises the first failure.
        list(self._writers.map(write, chunk))


def _chunks(items: Iterator[DueMessage], size: int) -> Iterator[list[DueMessage]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
