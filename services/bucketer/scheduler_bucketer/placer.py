"""Placement of messages entering the bucketer: route, write durably, re-check, queue sends.

A message enters from a new request or a redrive; both go through the same
`Placer.place` (decision 3: retries and redrives re-enter through the same placement).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.clock import Clock
from scheduler.domain.buckets import shard_of
from scheduler.domain.placement import Placement
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.settings import SchedulingSettings
from scheduler.store.pending_counts import PendingCounts
from scheduler.store.ports import (
    Application,
    LogEntry,
    MessageContent,
    StatusUpdate,
)

from .intake import Accepted, Rejection
from .metrics import BucketerMetrics
from .routing import Router
from .writer import SaveRecord, StoreRow, WriteOp, Writer, WriteStatus

log = logging.getLogger("scheduler_bucketer.placer")


@dataclass(frozen=True, slots=True)
class Entry:
    """One message (re-)entering placement: a new request or a redrive."""

    message: DueMessage
    shards: int
    event: str  # log wording: scheduled, redriven
    log_at_ms: int  # deterministic per event, so a replayed log write upserts the same row
    content: MessageContent | None = None  # saved with the status (new requests only)


@dataclass
class Outbox:
    """What a batch will produce once its writes are durable."""

    direct: list[tuple[str, DueMessage]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def shards_for(app: Application | None, scheduling: SchedulingSettings) -> int:
    return (app.shards if app is not None and app.shards else None) or scheduling.shards_per_bucket


class Placer:
    """Routes entries, writes them durably, re-checks the claim, queues the direct sends."""

    def __init__(
        self,
        router: Router,
        writer: Writer,
        clock: Clock,
        metrics: BucketerMetrics,
        pending: PendingCounts | None = None,
    ) -> None:
        self._router = router
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._pending = pending

    def place(self, entries: Sequence[Entry], outbox: Outbox) -> None:
        """Route, write durably and re-check, in one go (commands use this)."""
        self.finish(self.submit(entries, outbox), outbox)

    def submit(self, entries: Sequence[Entry], outbox: Outbox) -> list[Entry]:
        """Route the entries and start their writes; returns the stored ones for `finish`."""
        now = self._clock.now_ms()
        writes: list[WriteOp] = []
        stored: list[Entry] = []
        for entry in entries:
            m = entry.message
            if self._router.place(m.due_ms, now) is Placement.DIRECT:
                topic = self._router.due_topic(m.due_ms, now)
                writes.append(self._status_write(entry, Status.QUEUED, now, {"topic": topic}))
                outbox.direct.append((topic, m))
                cause = "near" if self._router.near(m.due_ms, now) else "released"
                self._metrics.routed_direct.labels(cause).inc()
            else:
                bucket = self._router.bucket_of(m.due_ms)
                shard = shard_of(m.message_id, entry.shards)
                data: dict[str, object] = {"bucket_ms": bucket, "shard": shard}
                writes.append(self._status_write(entry, Status.READY, now, data))
                writes.append(StoreRow(bucket, shard, m))
                stored.append(entry)
        self._writer.submit(writes)
        return stored

    def finish(self, stored: Sequence[Entry], outbox: Outbox) -> None:
        """Wait until every submitted write is durable, then re-check the claim."""
        self._writer.drain()
        self._metrics.stored.inc(len(stored))
        if stored:
            self._count_pending(stored)
            self._send_if_claimed_meanwhile(stored, self._clock.now_ms(), outbox)

    def _count_pending(self, stored: Sequence[Entry]) -> None:
        """Best effort: the counts only feed an approximate gauge, so a failure never fails
        (and retries) the batch."""
        if self._pending is None:
            return
        by_bucket: dict[int, int] = {}
        for entry in stored:
            bucket = self._router.bucket_of(entry.message.due_ms)
            by_bucket[bucket] = by_bucket.get(bucket, 0) + 1
        try:
            self._pending.add(by_bucket)
        except Exception as exc:  # noqa: BLE001 - counted and logged, the messages are stored
            self._metrics.pending_count_failures.inc()
            log.warning("pending counts not updated for %d message(s): %s", len(stored), exc)

    def _send_if_claimed_meanwhile(self, stored: Sequence[Entry], now: int, outbox: Outbox) -> None:
        claim = self._router.claimed_up_to(fresh=True)
        late = [entry for entry in stored if self._router.claimed(entry.message.due_ms, claim)]
        if not late:
            return
        writes: list[WriteOp] = []
        for entry in late:
            topic = self._router.due_topic(entry.message.due_ms, now)
            data: dict[str, object] = {"topic": topic, "released_meanwhile": True}
            writes.append(self._status_write(entry, Status.QUEUED, now, data, update_only=True))
            outbox.direct.append((topic, entry.message))
        self._writer.submit(writes)
        self._writer.drain()
        self._metrics.routed_direct.labels("released_meanwhile").inc(len(late))
        log.info("%d stored message(s) were in buckets claimed meanwhile: sent directly", len(late))

    def _status_write(
        self,
        entry: Entry,
        status: Status,
        now: int,
        data: dict[str, object],
        update_only: bool = False,
    ) -> WriteOp:
        m = entry.message
        state = StatusUpdate(
            status=status,
            generation=m.generation,
            attempt=m.attempt,
            due_ms=m.due_ms,
            at_ms=now,
            stored=status is Status.READY,  # with its bucket row: shown QUEUED once released
        )
        word = "queued" if status is Status.QUEUED else "stored"
        log_entry = LogEntry(
            at_ms=entry.log_at_ms,
            entry_id=f"{m.generation}:{m.attempt}:{entry.event}:{word}",
            status=status,
            data={"due_ms": m.due_ms, **data},
        )
        if entry.content is not None and not update_only:
            return SaveRecord(entry.content, state, log_entry)
        return WriteStatus(m.app_id, m.message_id, state, log_entry)


def entry_of(accepted: Accepted, scheduling: SchedulingSettings) -> Entry:
    r = accepted.request
    message = DueMessage(
        message_id=r.message_id,
        app_id=r.app_id,
        generation=0,
        attempt=1,
        due_ms=r.send_at_ms,
        send_at_ms=r.send_at_ms,
        created_ms=r.created_ms,
        payload_json=r.payload_json,
        kafka_key=r.kafka_key,
    )
    content = MessageContent.of_request(r)
    # The log time comes from the data (the record's Kafka timestamp), not the clock, so a
    # replay writes the same log row again instead of a second entry.
    at_ms = max(r.created_ms, accepted.record.timestamp_ms or 0)
    return Entry(message, shards_for(accepted.app, scheduling), "scheduled", at_ms, content)
