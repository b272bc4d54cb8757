"""A bucketer pipeline wired with fakes and a ManualClock (no I/O)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.codec import RecordCodec
from scheduler.domain.ids import new_message_id
from scheduler.kafka.producer import InMemoryProducer
from scheduler.records import (
    Command,
    CommandKind,
    DueMessage,
    RejectedRequest,
    ScheduleDefinition,
    ScheduleOperation,
    ScheduleRequest,
)
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import Application
from scheduler.testing.fakes import (
    InMemoryApps,
    InMemoryBucketStore,
    InMemoryMessageStore,
    InMemoryScheduleStore,
)
from scheduler.topics import Topics
from scheduler_bucketer.intake import InputRecord
from scheduler_bucketer.metrics import BucketerMetrics
from scheduler_bucketer.pipeline import BatchProcessor, Ports, build_processor
from scheduler_bucketer.settings import BucketerSettings
from scheduler_bucketer.writer import PortWriter

SCHEDULING = SchedulingSettings(
    bucket_width_ms=1_000,
    lookahead_ms=4_000,
    placement_margin_ms=1_000,
    ring_size=6,
    ring_slot_ms=2_000,
    cancel_guard_ms=200,
)
APP = Application(
    app_id="app-a", owner_id="o", name="a", type="REST", endpoint="http://127.0.0.1:1/x"
)
DELETED = Application(
    app_id="app-gone",
    owner_id="o",
    name="g",
    type="REST",
    endpoint="http://127.0.0.1:1/x",
    deleted_ms=1,
)
REQUESTS = RecordCodec(ScheduleRequest)
DUE = RecordCodec(DueMessage)
REJECTED = RecordCodec(RejectedRequest)
COMMANDS = RecordCodec(Command)
DEFINITIONS = RecordCodec(ScheduleDefinition)
TEN_YEARS_MS = 10 * 365 * 86_400_000


@dataclass
class Harness:
    clock: ManualClock = field(default_factory=ManualClock)
    messages: InMemoryMessageStore = field(default_factory=InMemoryMessageStore)
    buckets: InMemoryBucketStore = field(default_factory=InMemoryBucketStore)
    apps: InMemoryApps = field(default_factory=lambda: InMemoryApps(APP, DELETED))
    producer: InMemoryProducer = field(default_factory=InMemoryProducer)
    schedules: InMemoryScheduleStore = field(default_factory=InMemoryScheduleStore)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    topics: Topics = field(
        default_factory=lambda: Topics(KafkaSettings(topic_prefix="t."), SCHEDULING)
    )
    _offsets: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.metrics = BucketerMetrics(self.registry)
        self.writer = PortWriter(self.messages, self.buckets, 4)
        self.processor: BatchProcessor = build_processor(
            Ports(
                self.messages,
                self.buckets,
                self.apps,
                self.producer,
                self.clock,
                schedules=self.schedules,
            ),
            self.topics,
            SCHEDULING,
            BucketerSettings(watermark_cache_ms=0, app_cache_ms=0),
            self.metrics,
            self.writer,
        )

    # -- input ----------------------------------------------------------------------------------

    def request(
        self,
        send_at_ms: int,
        app_id: str = "app-a",
        message_id: str | None = None,
        payload_json: str = '{"n": 1}',
        created_ms: int | None = None,
    ) -> ScheduleRequest:
        now = self.clock.now_ms()
        return ScheduleRequest(
            message_id=message_id or new_message_id(now),
            app_id=app_id,
            payload_json=payload_json,
            send_at_ms=send_at_ms,
            created_ms=now if created_ms is None else created_ms,
            source="kafka",
        )

    def raw(self, value: bytes | None, topic: str | None = None) -> InputRecord:
        return InputRecord(
            topic=topic or self.topics.requests,
            partition=0,
            offset=next(self._offsets),
            key=b"app-a",
            value=value,
            timestamp_ms=self.clock.now_ms(),
        )

    def record(self, request: ScheduleRequest) -> InputRecord:
        return self.raw(REQUESTS.encode(request))

    def command(
        self,
        kind: CommandKind,
        message_id: str,
        generation: int,
        send_at_ms: int | None = None,
        app_id: str = "app-a",
    ) -> InputRecord:
        cmd = Command(
            message_id=message_id,
            app_id=app_id,
            kind=kind,
            generation=generation,
            issued_ms=self.clock.now_ms(),
            send_at_ms=send_at_ms,
        )
        return self.raw(COMMANDS.encode(cmd), topic=self.topics.commands)

    def definition(
        self,
        operation: ScheduleOperation,
        schedule_id: str,
        app_id: str = "app-a",
        **fields: object,
    ) -> InputRecord:
        """A ScheduleDefinition issued now; a PUT gets a valid timing and payload by default."""
        if operation is ScheduleOperation.PUT:
            fields = {"expression": "rate(1 minute)", "payload_json": '{"n": 1}', **fields}
        definition = ScheduleDefinition(
            schedule_id=schedule_id,
            app_id=app_id,
            operation=operation,
            issued_ms=self.clock.now_ms(),
            **fields,  # type: ignore[arg-type]
        )
        return self.raw(DEFINITIONS.encode(definition))

    def process(self, *records: InputRecord) -> None:
        self.processor.process(list(records))

    # -- output ---------------------------------------------------------------------------------

    def direct(self) -> list[tuple[str, DueMessage]]:
        ring = set(self.topics.ring.topics())
        return [(r.topic, DUE.decode(r.value)) for r in self.producer.records if r.topic in ring]

    def rejected(self) -> list[RejectedRequest]:
        return [REJECTED.decode(r.value) for r in self.producer.on(self.topics.rejected)]

    def stored(self) -> list[DueMessage]:
        found = []
        for bucket in sorted({b for (b, _, _) in self.buckets._rows}):
            for app, shard in self.buckets.partitions(bucket):
                found += list(self.buckets.read(bucket, app, shard))
        return found

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value
