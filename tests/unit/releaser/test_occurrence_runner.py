"""The occurrence runner on fakes and a manual clock: what it creates, when it stores the cursor,
and the pause that races a tick (releaser/occurrences.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.codec import RecordCodec
from scheduler.domain.ids import occurrence_message_id
from scheduler.domain.recurrence import CatchUpPolicy, Recurrence
from scheduler.domain.status import Status
from scheduler.kafka.producer import InMemoryProducer, ProduceError
from scheduler.records import Command, CommandKind, ScheduleRequest
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import LogEntry, MessageContent, Schedule, StatusUpdate
from scheduler.store.usage import InMemoryUsageStore
from scheduler.testing.fakes import InMemoryMessageStore, InMemoryScheduleStore
from scheduler.topics import Topics
from scheduler_releaser.metrics import OccurrenceMetrics
from scheduler_releaser.releaser.occurrences import OccurrenceRunner

pytestmark = pytest.mark.unit

T0 = 1_893_456_000_000  # 2030-01-01T00:00:00Z, a whole minute
SCHEDULING = SchedulingSettings(cancel_guard_ms=500)
TOPICS = Topics(KafkaSettings(topic_prefix="t."), SCHEDULING)
REQUESTS = RecordCodec(ScheduleRequest)
COMMANDS = RecordCodec(Command)
LOOKAHEAD_MS = 10_000


class HookedProducer(InMemoryProducer):
    """Runs `before_flush` once, at the next flush: between the produce and the ack."""

    def __init__(self) -> None:
        super().__init__()
        self.before_flush: Callable[[], None] | None = None

    def flush(self, timeout_s: float) -> None:
        hook, self.before_flush = self.before_flush, None
        if hook is not None:
            hook()
        super().flush(timeout_s)


class World:
    def __init__(self, runner: type[OccurrenceRunner] = OccurrenceRunner) -> None:
        self.clock = ManualClock(T0)
        self.schedules = InMemoryScheduleStore(self.clock)
        self.messages = InMemoryMessageStore(self.clock)
        self.usage = InMemoryUsageStore()
        self.producer = HookedProducer()
        self.runner = runner(
            schedules=self.schedules,
            messages=self.messages,
            usage=self.usage,
            producer=self.producer,
            requests=REQUESTS,
            commands=COMMANDS,
            topics=TOPICS,
            scheduling=SCHEDULING,
            clock=self.clock,
            metrics=OccurrenceMetrics(CollectorRegistry()),
            lookahead_ms=LOOKAHEAD_MS,
            limit=100,
            rescan_ms=300_000,
        )

    def add(self, schedule_id: str, expression: str, **options: object) -> Schedule:
        schedule = Schedule(
            app_id="app-1",
            schedule_id=schedule_id,
            recurrence=Recurrence(expression, **options),  # type: ignore[arg-type]
            payload_json='{"n":1}',
            created_ms=self.clock.now_ms(),
            updated_ms=self.clock.now_ms(),
        )
        self.schedules.put(schedule)
        self.schedules.advance_cursor("app-1", schedule_id, self.clock.now_ms())
        return schedule

    def requests(self) -> list[ScheduleRequest]:
        return [REQUESTS.decode(r.value) for r in self.producer.on(TOPICS.requests)]

    def commands(self) -> list[Command]:
        return [COMMANDS.decode(r.value) for r in self.producer.on(TOPICS.commands)]

    def cursor(self, schedule_id: str) -> int | None:
        stored = self.schedules.get("app-1", schedule_id)
        assert stored is not None
        return stored.cursor_ms

    def store_requests(self) -> None:
        """What the bucketer does with each published request: the record, READY."""
        for r in self.requests():
            ready = StatusUpdate(Status.READY, 0, 1, r.send_at_ms, r.created_ms)
            entry = LogEntry(r.created_ms, "0:1:scheduled", Status.READY)
            self.messages.save(MessageContent.of_request(r), ready, entry)


def ids(schedule_id: str, instants: list[int]) -> list[str]:
    return [occurrence_message_id("app-1", schedule_id, t) for t in instants]


def test_a_tick_creates_the_occurrences_within_the_lookahead_then_stores_the_cursor() -> None:
    w = World()
    w.add("every-2s", "rate(2 seconds)", start_ms=T0)
    assert w.runner.tick() == 5
    expected = [T0 + 2_000 * i for i in range(1, 6)]  # after the creation instant, up to +10 s
    published = w.requests()
    assert [r.send_at_ms for r in published] == expected
    assert [r.message_id for r in published] == ids("every-2s", expected)
    assert {r.source for r in published} == {"schedule:every-2s"}
    assert {r.payload_json for r in published} == {'{"n":1}'}
    assert w.cursor("every-2s") == T0 + 10_000
    assert w.runner.tick() == 0  # nothing new until the look-ahead moves
    w.clock.advance(3_000)
    assert w.runner.tick() == 1
    assert w.requests()[-1].send_at_ms == T0 + 12_000


def test_a_failed_flush_stores_no_cursor_and_the_repeat_creates_the_same_ids() -> None:
    w = World()
    w.add("s", "rate(2 seconds)", start_ms=T0)
    w.producer.fail_next_flush = 1
    w.producer.delivered_on_failure = 2  # part of the batch reached Kafka anyway
    with pytest.raises(ProduceError):
        w.runner.tick()
    assert w.cursor("s") == T0  # not moved past anything unacknowledged
    w.clock.advance(1_000)
    w.runner.tick()
    published = [r.message_id for r in w.requests()]
    expected = ids("s", [T0 + 2_000 * i for i in range(1, 6)])
    assert sorted(set(published)) == expected  # every instant, each under one id
    assert len(published) == 7  # the two delivered before the failure came again: same ids
    assert w.cursor("s") == T0 + 10_000


def test_paused_and_deleted_schedules_create_nothing() -> None:
    w = World()
    w.add("paused", "rate(1 second)")
    w.add("deleted", "rate(1 second)")
    w.schedules.set_paused("app-1", "paused", True, T0)
    w.schedules.delete("app-1", "deleted", T0)
    assert w.runner.tick() == 0
    assert w.requests() == []


def test_catch_up_after_an_outage_follows_the_policy() -> None:
    w = World()
    w.add("latest", "*/5 * * * *")
    w.add("skip", "*/5 * * * *", catch_up=CatchUpPolicy.SKIP)
    w.clock.advance(12 * 60_000)  # down 12 minutes: 00:05 and 00:10 were missed
    w.runner.tick()
    assert [(r.source, r.send_at_ms) for r in w.requests()] == [
        ("schedule:latest", T0 + 10 * 60_000)  # the latest missed one only; none for `skip`
    ]
    assert w.cursor("latest") == w.cursor("skip") == T0 + 10 * 60_000


def test_a_pause_that_races_a_tick_still_aborts_what_the_tick_created() -> None:
    """The pause route writes its flag and aborts up to the cursor it reads then. Here that read
    happens while the tick is between its produce and its cursor: the route sees the old cursor
    and aborts nothing, so the runner's own re-read must abort the occurrences it created."""
    w = World()
    w.add("s", "rate(2 seconds)", start_ms=T0)
    route_saw: list[int | None] = []

    def pause_route() -> None:
        w.schedules.set_paused("app-1", "s", True, w.clock.now_ms())
        route_saw.append(w.cursor("s"))

    w.producer.before_flush = pause_route
    w.runner.tick()
    assert route_saw == [T0]  # the route found nothing created ahead
    w.store_requests()
    created = ids("s", [T0 + 2_000 * i for i in range(1, 6)])
    for message_id in created:
        view = w.messages.get("app-1", message_id)
        assert view is not None and view.state.status is Status.ABORTED, message_id
    aborts = [c for c in w.commands() if c.kind is CommandKind.ABORT]
    assert sorted(c.message_id for c in aborts) == created
    assert {c.generation for c in aborts} == {0}
    assert w.usage.pending("app-1") == -5  # the bucketer adds them as it stores the requests


def test_an_occurrence_within_the_cancel_guard_is_not_aborted() -> None:
    w = World()
    w.add("s", "rate(2 seconds)", start_ms=T0)

    def pause_within_the_guard_of_the_first() -> None:
        w.clock.advance(1_600)  # the first occurrence (T0 + 2 s) is due in 400 ms < the guard
        w.schedules.set_paused("app-1", "s", True, w.clock.now_ms())

    w.producer.before_flush = pause_within_the_guard_of_the_first
    w.runner.tick()
    assert sorted(c.message_id for c in w.commands()) == ids(
        "s", [T0 + 2_000 * i for i in range(2, 6)]
    )


def test_an_abort_that_failed_is_tried_again_at_the_next_tick() -> None:
    w = World()
    w.add("s", "rate(2 seconds)", start_ms=T0)

    def fail_this_flush() -> None:
        w.producer.fail_next_flush = 1

    def delete_and_break_the_next_flush() -> None:
        w.schedules.delete("app-1", "s", w.clock.now_ms())
        w.producer.before_flush = fail_this_flush  # the flush of the abort commands

    w.producer.before_flush = delete_and_break_the_next_flush
    with pytest.raises(ProduceError):
        w.runner.tick()
    assert w.commands() == []
    w.runner.tick()
    assert len(w.commands()) == 5


def test_a_missed_occurrence_older_than_the_past_window_is_sent_at_the_window_s_edge() -> None:
    w = World()
    w.add("daily", "0 12 * * *", catch_up=CatchUpPolicy.ALL)
    w.clock.advance(3 * 86_400_000)  # three days down: past_window_ms is one day
    w.runner.tick()
    day, noon = 86_400_000, 43_200_000
    published = w.requests()
    assert [r.message_id for r in published] == ids(
        "daily", [T0 + d * day + noon for d in range(3)]
    )
    oldest = w.clock.now_ms() - SCHEDULING.past_window_ms
    assert [r.send_at_ms for r in published] == [oldest, oldest, T0 + 2 * day + noon]
    assert w.cursor("daily") == T0 + 2 * day + noon


def test_an_occurrence_the_bucketer_would_refuse_is_counted_not_created() -> None:
    w = World()
    w.add("big", "rate(2 seconds)", start_ms=T0)
    stored = w.schedules.get("app-1", "big")
    assert stored is not None  # over SCHEDULER_MAX_PAYLOAD_BYTES (256 KiB), as if it was lowered
    w.schedules.put(dataclasses.replace(stored, payload_json="[" + "1," * 200_000 + "1]"))
    w.runner.tick()
    assert w.requests() == []
    assert w.cursor("big") == T0 + 10_000  # refused now and at every later tick: passed
