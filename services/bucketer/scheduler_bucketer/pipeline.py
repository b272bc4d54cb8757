"""The bucketer's batch pipeline: decode -> validate -> route -> write -> produce -> (commit).

`BatchProcessor.process(records)` does everything a batch needs before its offsets may be
committed, in this order:

1. requests: admit (decode, validate, live app, idempotency key) or reject; route each
   accepted message;
2. write every record (READY or QUEUED) and every bucket row, concurrently (chunk by chunk, so
   writes overlap with decoding), and wait until all are durable;
3. re-read the release claim: a stored message whose bucket was claimed meanwhile is also sent
   directly (decision 2; duplicates are removed downstream by (id, generation, attempt));
4. schedule definitions (ScheduleDefinition records of the requests topic, in their order;
   schedules.py), after the requests of the batch are written, so that a pause finds the
   occurrences stored that came before it;
5. commands (abort, redrive; RESCHEDULE is refused), after the requests of the batch are written;
6. produce the direct sends, the rejections and the ABORT commands of paused or deleted
   schedules, flush, and check that Kafka acknowledged all.

It returns normally only when all of that is durable; the caller then commits the offsets. Any
exception means "nothing of this batch is known to be durable": the caller rewinds and retries,
and because every write is idempotent by message id, the retry neither loses nor duplicates.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.clock import Clock
from scheduler.codec import RecordCodec, value_subject
from scheduler.domain.idempotency import claim_ttl_ms
from scheduler.kafka.producer import RecordProducer
from scheduler.records import (
    Command,
    DueMessage,
    RejectedRequest,
    ScheduleDefinition,
    ScheduleRequest,
)
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.pending_counts import PendingCounts
from scheduler.store.ports import AppLookup, BucketStore, MessageStore, ScheduleStore
from scheduler.store.usage import UsageStore
from scheduler.topics import Topics

from .commands import CommandHandler
from .idempotency import KeyGate
from .intake import Accepted, CachedApps, InputRecord, Intake, Rejection
from .metrics import BucketerMetrics
from .pending_cap import PendingCapGate
from .placer import Entry, Outbox, Placer, entry_of
from .routing import Router
from .schedules import ScheduleHandler
from .settings import BucketerSettings
from .writer import Writer

if TYPE_CHECKING:  # the registry client pulls in an OAuth stack (~0.3 s of imports)
    from confluent_kafka.schema_registry import SchemaRegistryClient

log = logging.getLogger("scheduler_bucketer.pipeline")
CHUNK = 250  # requests routed per write submission


class BatchProcessor:
    def __init__(
        self,
        *,
        topics: Topics,
        intake: Intake,
        placer: Placer,
        commands: CommandHandler,
        producer: RecordProducer,
        due_codec: RecordCodec[DueMessage],
        rejected_codec: RecordCodec[RejectedRequest],
        scheduling: SchedulingSettings,
        clock: Clock,
        metrics: BucketerMetrics,
        flush_timeout_s: float,
        pending_cap: PendingCapGate | None = None,
        keys: KeyGate | None = None,
        schedules: ScheduleHandler | None = None,
        command_codec: RecordCodec[Command] | None = None,
    ) -> None:
        """`schedules` None: ScheduleDefinition records take the request path and are refused
        (`wrong_schema`), as by a bucketer of the release before schedules."""
        self._topics = topics
        self._schedules = schedules
        self._command_codec = command_codec or RecordCodec(Command)
        self._keys = keys
        self._pending_cap = pending_cap
        self._intake = intake
        self._placer = placer
        self._commands = commands
        self._producer = producer
        self._due_codec = due_codec
        self._rejected_codec = rejected_codec
        self._scheduling = scheduling
        self._clock = clock
        self._metrics = metrics
        self._flush_timeout_s = flush_timeout_s

    def process(self, records: Sequence[InputRecord]) -> None:
        outbox = Outbox()
        requests: list[InputRecord] = []
        definitions: list[InputRecord] = []
        for r in records:
            if r.topic == self._topics.requests:
                is_definition = self._schedules is not None and self._intake.is_definition(r)
                (definitions if is_definition else requests).append(r)
        commands = [r for r in records if r.topic == self._topics.commands]
        self._metrics.consumed.labels("requests").inc(len(requests) + len(definitions))
        self._metrics.consumed.labels("commands").inc(len(commands))
        # Chunks: the writes of one chunk travel while the next one is decoded and routed.
        stored: list[Entry] = []
        seen: set[tuple[str, str]] = set()
        accepted_requests: list[ScheduleRequest] = []
        for start in range(0, len(requests), CHUNK):
            entries: list[Entry] = []
            for admitted in self._capped(self._admit(requests[start : start + CHUNK]), seen):
                if isinstance(admitted, Rejection):
                    outbox.rejections.append(admitted)
                    continue
                seen.add((admitted.request.app_id, admitted.request.message_id))
                entries.append(entry_of(admitted, self._scheduling))
                accepted_requests.append(admitted.request)
            stored += self._placer.submit(entries, outbox)
        self._placer.finish(stored, outbox)
        schedule_commands: list[Command] = []
        if self._schedules is not None:
            for record in definitions:
                schedule_commands += self._schedules.apply(record, outbox)
        for record in commands:
            self._commands.apply(record, outbox)
        self._produce(outbox, schedule_commands)
        if self._pending_cap is not None:  # durable now: count what ingest did not
            self._pending_cap.count(accepted_requests)

    def _admit(self, records: Sequence[InputRecord]) -> list[Accepted | Rejection | None]:
        """Decode, validate, check the app; then settle the idempotency keys of the chunk."""
        admitted = [self._intake.admit(record) for record in records]
        if self._keys is None:
            return list(admitted)
        accepted = [a for a in admitted if isinstance(a, Accepted)]
        settled = iter(self._keys.settle(accepted))
        return [next(settled) if isinstance(a, Accepted) else a for a in admitted]

    def _capped(
        self, chunk: Sequence[Accepted | Rejection | None], seen: set[tuple[str, str]]
    ) -> list[Accepted | Rejection]:
        """The chunk, in order, through the pending cap, without copies of recorded messages
        (None) and of messages admitted earlier in the batch (a producer retry). A copy of a
        refused request is refused too: each record gets its own outcome."""
        slots: list[Accepted | Rejection | None] = []
        firsts: list[tuple[int, Accepted]] = []  # (slot, request) of each message's first copy
        copies: list[tuple[int, int, InputRecord]] = []  # (slot, its first in `firsts`, record)
        first_of: dict[tuple[str, str], int] = {}
        for admitted in chunk:
            if admitted is None:
                continue
            if isinstance(admitted, Rejection):
                slots.append(admitted)
                continue
            key = (admitted.request.app_id, admitted.request.message_id)
            if key in seen:
                continue
            if key in first_of:
                copies.append((len(slots), first_of[key], admitted.record))
                slots.append(None)
                continue
            first_of[key] = len(firsts)
            firsts.append((len(slots), admitted))
            slots.append(admitted)
        if self._pending_cap is not None and firsts:
            verdicts = self._pending_cap.check([a for _, a in firsts])
            for (slot, _), refused in zip(firsts, verdicts, strict=True):
                if refused is not None:
                    slots[slot] = refused
            for slot, first, record in copies:
                if (refused := verdicts[first]) is not None:
                    slots[slot] = dataclasses.replace(refused, record=record)
        return [s for s in slots if s is not None]

    def _produce(self, outbox: Outbox, commands: Sequence[Command] = ()) -> None:
        for topic, message in outbox.direct:
            self._producer.produce(
                topic, message.message_id.encode(), self._due_codec.encode(message)
            )
        for command in commands:  # keyed by message id, as ingest publishes them
            self._producer.produce(
                self._topics.commands,
                command.message_id.encode(),
                self._command_codec.encode(command),
            )
        now = self._clock.now_ms()
        for rejection in outbox.rejections:
            record = rejection.record
            self._producer.produce(
                self._topics.rejected,
                None,
                self._rejected_codec.encode(
                    RejectedRequest(
                        reason=rejection.reason,
                        detail=rejection.detail[:1_000],
                        original=record.value or b"",
                        source_topic=record.topic,
                        source_partition=record.partition,
                        source_offset=record.offset,
                        rejected_ms=now,
                        app_id=rejection.app_id,
                        message_id=rejection.message_id,
                    )
                ),
            )
            self._metrics.rejected.labels(rejection.reason).inc()
        _log_rejections(outbox.rejections)
        if outbox.direct or outbox.rejections or commands:
            self._producer.flush(self._flush_timeout_s)


def _log_rejections(rejections: Sequence[Rejection]) -> None:
    """One line per reason and batch, with the first record refused: each refusal is on the
    rejected topic with its detail, and a producer far over its cap would otherwise write a
    log line per request."""
    by_reason: dict[str, list[Rejection]] = {}
    for rejection in rejections:
        by_reason.setdefault(rejection.reason, []).append(rejection)
    for reason, refused in by_reason.items():
        first = refused[0].record
        log.warning(
            "rejected %d request(s): %s; the first %s[%d]@%d: %s",
            len(refused),
            reason,
            first.topic,
            first.partition,
            first.offset,
            refused[0].detail[:200],
        )


@dataclass(frozen=True)
class Ports:
    """Everything the pipeline talks to; tests pass fakes, main() the real adapters."""

    messages: MessageStore
    buckets: BucketStore
    apps: AppLookup
    producer: RecordProducer
    clock: Clock
    usage: UsageStore | None = None  # the pending cap of Kafka-native requests (None: off)
    pending: PendingCounts | None = None  # approximate counts for the pending gauge
    # recurring schedules changed by ScheduleDefinition records (None: those are refused)
    schedules: ScheduleStore | None = None
    # how long an idempotency key claim is kept (claim_ttl_ms of the requests retention)
    key_ttl_ms: int = claim_ttl_ms(KafkaSettings.model_fields["requests_retention_ms"].default)


def build_processor(
    ports: Ports,
    topics: Topics,
    scheduling: SchedulingSettings,
    settings: BucketerSettings,
    metrics: BucketerMetrics,
    writer: Writer,
    registry: SchemaRegistryClient | None = None,
) -> BatchProcessor:
    """Wire the steps inside out: router and placer, then intake and commands, then the batch."""
    router = Router(
        ports.buckets, scheduling, topics.ring, ports.clock, settings.watermark_cache_ms
    )
    apps = CachedApps(ports.apps, ports.clock, settings.app_cache_ms)
    placer = Placer(router, writer, ports.clock, metrics, ports.pending)
    commands = CommandHandler(
        RecordCodec(Command, registry=registry),
        ports.messages,
        ports.buckets,
        apps,
        placer,
        router,
        scheduling,
        ports.clock,
        metrics,
    )
    return BatchProcessor(
        topics=topics,
        intake=Intake(
            RecordCodec(ScheduleRequest, registry=registry), apps, scheduling, registry=registry
        ),
        placer=placer,
        commands=commands,
        producer=ports.producer,
        due_codec=RecordCodec(
            DueMessage, registry=registry, subject=value_subject(topics.ring.prefix.rstrip("."))
        ),
        rejected_codec=RecordCodec(
            RejectedRequest, registry=registry, subject=value_subject(topics.rejected)
        ),
        scheduling=scheduling,
        clock=ports.clock,
        metrics=metrics,
        flush_timeout_s=settings.flush_timeout_s,
        keys=KeyGate(ports.messages, ports.key_ttl_ms, metrics),
        schedules=(
            ScheduleHandler(
                RecordCodec(ScheduleDefinition, registry=registry),
                ports.schedules,
                ports.messages,
                apps,
                ports.usage,
                scheduling,
                ports.clock,
                metrics,
            )
            if ports.schedules is not None
            else None
        ),
        # the ABORT commands of paused or deleted schedules, encoded as ingest encodes them
        command_codec=RecordCodec(
            Command, registry=registry, subject=value_subject(topics.commands)
        ),
        pending_cap=(
            PendingCapGate(
                ports.usage,
                ports.messages,
                ports.clock,
                settings.max_pending_per_app or None,
                settings.pending_refresh_ms,
            )
            if ports.usage is not None
            else None
        ),
    )
