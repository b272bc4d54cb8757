"""A dispatcher core wired to fakes: ManualClock, in-memory stores, httpx MockTransport, a sink
that records what would be written in each transaction."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.domain.status import Status
from scheduler.records import Command, CommandKind, DeadLetter, DeliveryResult, DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import Application, LogEntry, MessageContent, StatusUpdate
from scheduler.testing.fakes import InMemoryApps, InMemoryBucketStore, InMemoryMessageStore
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.dispatcher.apps import AppCache
from scheduler_releaser.dispatcher.commands import CommandView
from scheduler_releaser.dispatcher.core import Dispatcher
from scheduler_releaser.dispatcher.httpx_post import HttpxPost
from scheduler_releaser.dispatcher.outbound import OutboundGuard
from scheduler_releaser.dispatcher.ports import OnCommitted, OnRefused, OutRecord
from scheduler_releaser.dispatcher.rest import RestDeliverer
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.metrics import DispatchMetrics
from scheduler_releaser.settings import DispatchSettings

KAFKA = KafkaSettings(topic_prefix="sched.")
SCHEDULING = SchedulingSettings(
    bucket_width_ms=1_000,
    lookahead_ms=4_000,
    placement_margin_ms=1_000,
    ring_size=6,
    ring_slot_ms=2_000,
    cancel_guard_ms=200,
)
TOPICS = Topics(KAFKA, SCHEDULING)
CODECS = Codecs.build(KAFKA)

REST_APP = Application(
    app_id="app-rest",
    owner_id="o",
    name="rest",
    type="REST",
    endpoint="http://receiver.example/hook",
    signing_secret="s3cret",
)
KAFKA_APP = Application(
    app_id="app-kafka", owner_id="o", name="k", type="KAFKA", endpoint="dest.topic"
)


@dataclass
class Emitted:
    records: list[OutRecord]
    settled: Position | None
    on_committed: OnCommitted | None
    not_before_ms: int | None = None
    at_ms: int | None = None  # the clock when it was emitted (a sink given a clock)
    on_refused: OnRefused | None = None


@dataclass
class RecordingSink:
    emitted: list[Emitted] = field(default_factory=list)
    clock: ManualClock | None = None

    def emit(
        self,
        records: list[OutRecord],
        settled: Position | None,
        on_committed: OnCommitted | None = None,
        not_before_ms: int | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        at_ms = self.clock.now_ms() if self.clock is not None else None
        self.emitted.append(
            Emitted(list(records), settled, on_committed, not_before_ms, at_ms, on_refused)
        )

    def commit(self, at_ms: int) -> None:
        """Commit everything emitted in one transaction at `at_ms`, as TransactionalSink does:
        every commit callback in one go on the event loop, then the loop's turn."""

        async def transaction() -> None:
            for e in self.emitted:
                if e.on_committed is not None:
                    e.on_committed(at_ms)
            await asyncio.sleep(0)

        asyncio.run(transaction())

    def on(self, topic: str) -> list[OutRecord]:
        return [r for e in self.emitted for r in e.records if r.topic == topic]

    def results(self) -> list[DeliveryResult]:
        return [CODECS.result.decode(r.value) for r in self.on(TOPICS.results)]

    def retries(self) -> list[DueMessage]:
        ring = set(TOPICS.ring.topics())
        return [
            CODECS.due.decode(r.value) for e in self.emitted for r in e.records if r.topic in ring
        ]

    def dead_letters(self) -> list[DeadLetter]:
        return [CODECS.dead_letter.decode(r.value) for r in self.on(TOPICS.dead_letter)]


@dataclass
class RecordsWritten:
    """The record writers' progress: current with the clock unless `behind` is set."""

    clock: ManualClock
    behind: bool = False
    caught_up_at: int = -(2**62)

    @property
    def covers_ms(self) -> int:
        return self.caught_up_at if self.behind else self.clock.now_ms()


class KnownTopics:
    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.forgotten: list[str] = []

    async def exists(self, topic: str) -> bool:
        return topic in self.names

    def forget(self, topic: str) -> None:
        self.forgotten.append(topic)


async def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


class ManualSleep:
    """Sleeping moves the manual clock instead of waiting on the wall clock.

    `wakes_after` (asked ms -> ms that pass, at least 1) makes it wake late (a busy event loop)
    or early, as a real sleep may: the event loop's monotonic clock is not the wall clock the due
    instants are in (a stepped or slewed host clock, a coarse timer), so a caller must check the
    time again."""

    def __init__(
        self,
        clock: ManualClock,
        on_sleep: Callable[[], None] | None = None,
        wakes_after: Callable[[int], int] | None = None,
    ) -> None:
        self.clock = clock
        self.slept_ms = 0
        self.woke_early = 0
        self.on_sleep = on_sleep
        self.wakes_after = wakes_after

    async def __call__(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep()
        asked = max(1, math.ceil(seconds * 1000))
        ms = asked if self.wakes_after is None else max(1, self.wakes_after(asked))
        self.woke_early += ms < asked
        self.slept_ms += ms
        self.clock.advance(ms)
        await asyncio.sleep(0)


class InlineExecutor(Executor):
    """Runs record reads in the calling thread (the fakes are in memory)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        future: Future[object] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Harness:
    clock: ManualClock
    dispatcher: Dispatcher
    sink: RecordingSink
    messages: InMemoryMessageStore
    buckets: InMemoryBucketStore
    apps: InMemoryApps
    commands: LiveView
    registry: CollectorRegistry
    records: RecordsWritten

    def message(
        self, app: Application = REST_APP, *, due_in_ms: int = 1_000, **kw: object
    ) -> DueMessage:
        now = self.clock.now_ms()
        fields: dict[str, object] = {
            "message_id": "01JAAAAAAAAAAAAAAAAAAAAAAA",
            "app_id": app.app_id,
            "generation": 0,
            "attempt": 1,
            "due_ms": now + due_in_ms,
            "send_at_ms": now + due_in_ms,
            "created_ms": now,
            "payload_json": '{"hello": "world"}',
        }
        fields.update(kw)
        return DueMessage(**fields)  # type: ignore[arg-type]

    def store_record(self, message: DueMessage, status: Status = Status.QUEUED) -> None:
        self.messages.save(
            MessageContent(
                app_id=message.app_id,
                message_id=message.message_id,
                payload_json=message.payload_json,
                send_at_ms=message.send_at_ms,
                created_ms=message.created_ms,
            ),
            StatusUpdate(status, message.generation, message.attempt, message.due_ms, 0),
            LogEntry(0, "test", status),
        )

    def abort_now(self, message: DueMessage) -> None:
        """An abort of `message` (generation 0) seen now, with the commands view caught up."""
        now = self.clock.now_ms()
        abort = Command(
            message_id=message.message_id,
            app_id=message.app_id,
            kind=CommandKind.ABORT,
            generation=0,
            issued_ms=now,
        )
        self.commands.arrive(abort)
        self.commands.read()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


class LiveView(CommandView):
    """The commands view as its feed keeps it, on one partition: Kafka is asked for the end at
    every lag check (the manual clock drives the instants). `arrive` appends a command that the
    reader has not read yet; `read` reads everything that arrived."""

    def __init__(self, now_ms: int) -> None:
        super().__init__(now_ms, [0])
        self.starts_at(0, 0)
        self._unread: list[Command | None] = []
        self._read = 0

    def lag_ms(self, now_ms: int) -> int:
        self.confirm(0, now_ms, self._read + len(self._unread))
        return super().lag_ms(now_ms)

    def arrive(self, command: Command | None = None) -> None:
        self._unread.append(command)

    @property
    def unread(self) -> int:
        return len(self._unread)

    def read(self) -> None:
        for command in self._unread:
            self.apply(0, self._read, command)
            self._read += 1
        self._unread = []


def build(
    handler: Handler | None = None,
    *,
    settings: DispatchSettings | None = None,
    apps: tuple[Application, ...] = (REST_APP, KAFKA_APP),
    resolver=public_resolver,
    allow_private: bool = False,
    on_sleep: Callable[[], None] | None = None,
    sleep_wakes_after: Callable[[int], int] | None = None,
) -> Harness:
    clock = ManualClock()
    settings = settings or DispatchSettings(max_attempts=3, backoff_base_ms=500, prefetch_ms=0)
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(200)))
    client = httpx.AsyncClient(transport=transport, follow_redirects=False)
    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)
    messages = InMemoryMessageStore()
    buckets = InMemoryBucketStore()
    # the releaser is current: buckets up to now + look-ahead are released
    buckets.advance_watermark(clock.now_ms() + SCHEDULING.lookahead_ms, clock.now_ms())
    app_lookup = InMemoryApps(*apps)
    commands = LiveView(clock.now_ms())
    sink = RecordingSink(clock=clock)
    records = RecordsWritten(clock)
    dispatcher = Dispatcher(
        clock=clock,
        kafka=KAFKA,
        scheduling=SCHEDULING,
        settings=settings,
        states=messages,  # the fake is its own StatusReader
        buckets=buckets,
        apps=AppCache(app_lookup, clock, ttl_ms=0),
        commands=commands,
        rest=RestDeliverer(HttpxPost(client), OutboundGuard(allow_private, resolver), clock, 4),
        topic_check=KnownTopics("dest.topic"),
        sink=sink,
        codecs=CODECS,
        metrics=metrics,
        records=records,
        sleep=ManualSleep(clock, on_sleep, sleep_wakes_after),
        reads=InlineExecutor(),
    )
    return Harness(
        clock, dispatcher, sink, messages, buckets, app_lookup, commands, registry, records
    )
