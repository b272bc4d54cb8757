"""A KAFKA app's due messages fire as a run (core.py, `_fire_kafka_run`): the app, its admission
and its topic are checked once per group due together, yet each message keeps its own checks
and its own outcome (manual clock; sleeping moves it)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from scheduler.domain.policy import DeliveryPolicy
from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DueMessage
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.refusals import Refusal
from scheduler_releaser.dispatcher.timers import PARKED_HEADER, Position
from scheduler_releaser.settings import DispatchSettings

from .harness import KAFKA_APP, TOPICS, Harness, build

pytestmark = pytest.mark.unit
HOUR = 3_600_000
# prefetch: the messages of a run are taken from the timer queue together, up to 5 s early
PREFETCH = DispatchSettings(max_attempts=3, backoff_base_ms=500, prefetch_ms=5_000)


def ids(n: int) -> list[str]:
    return [f"01JAAAAAAAAAAAAAAAAAAA{i:04d}" for i in range(n)]


def accept_all(h: Harness, messages: list[DueMessage]) -> None:
    for i, m in enumerate(messages):
        h.dispatcher.accept(m, Position("ring", 0, i))


def produced_ids(h: Harness) -> list[str]:
    return [r.key.decode() for r in h.sink.on("dest.topic") if r.key is not None]


def test_each_message_of_a_run_due_together_keeps_its_own_outcome() -> None:
    """Five due at the same instant: an aborted one is skipped, one already sent is not sent
    again, one past its app's max event age fails, and the other two are produced in due
    order; every one settles its own ring offset."""
    app = dataclasses.replace(KAFKA_APP, policy=DeliveryPolicy(max_event_age_ms=60_000))
    h = build(apps=(app,))
    now = h.clock.now_ms()
    first, aborted, sent, too_old, last = [
        h.message(app, due_in_ms=0, message_id=i) for i in ids(5)
    ]
    too_old = dataclasses.replace(too_old, send_at_ms=now - 120_000, created_ms=now - 120_000)
    for m in (first, aborted, too_old, last):
        h.store_record(m)
    h.store_record(sent, Status.SENT)
    h.abort_now(aborted)
    accept_all(h, [first, aborted, sent, too_old, last])

    asyncio.run(h.dispatcher.fire_due())

    assert produced_ids(h) == [first.message_id, last.message_id]
    by_id = {r.message_id: r for r in h.sink.results()}
    assert {i: r.outcome for i, r in by_id.items()} == {
        first.message_id: DeliveryOutcome.SENT,
        aborted.message_id: DeliveryOutcome.SKIPPED,
        sent.message_id: DeliveryOutcome.SKIPPED,
        too_old.message_id: DeliveryOutcome.FAILED,
        last.message_id: DeliveryOutcome.SENT,
    }
    assert by_id[aborted.message_id].error == "aborted"
    [dead] = h.sink.dead_letters()
    assert dead.message_id == too_old.message_id
    assert sorted(e.settled.offset for e in h.sink.emitted if e.settled is not None) == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_a_run_fires_each_message_at_its_own_due_instant() -> None:
    h = build(settings=PREFETCH)
    start = h.clock.now_ms()
    messages = [h.message(KAFKA_APP, due_in_ms=100 * i, message_id=m) for i, m in enumerate(ids(4))]
    accept_all(h, messages)
    asyncio.run(h.dispatcher.fire_due())
    # one task fired them all, each once it was due (produced ahead, to commit at the due
    # instant) and none before
    ahead = PREFETCH.kafka_produce_ahead_ms
    assert [e.at_ms for e in h.sink.emitted] == [max(start, m.due_ms - ahead) for m in messages]
    assert [e.not_before_ms for e in h.sink.emitted] == [m.due_ms for m in messages]
    assert produced_ids(h) == [m.message_id for m in messages]


def test_an_app_paused_in_the_middle_of_a_run_parks_each_of_the_rest_on_its_own() -> None:
    """Paused after the first of a run is produced: the others wait for the app, each in its
    own task, so each parks one bound after its due instant, not one bound after another."""
    settings = PREFETCH.model_copy(update={"park_after_ms": HOUR})

    def pause_once_the_first_is_produced() -> None:
        if h.sink.on("dest.topic"):
            h.apps.apps[KAFKA_APP.app_id] = dataclasses.replace(KAFKA_APP, deliveries_paused=True)

    h = build(settings=settings, on_sleep=pause_once_the_first_is_produced)
    start = h.clock.now_ms()
    messages = [
        h.message(KAFKA_APP, due_in_ms=1_000 * i, message_id=m) for i, m in enumerate(ids(3))
    ]
    accept_all(h, messages)
    asyncio.run(h.dispatcher.fire_due())

    assert produced_ids(h) == [messages[0].message_id]
    parks = [e for e in h.sink.emitted if any(PARKED_HEADER in dict(r.headers) for r in e.records)]
    assert sorted(e.settled.offset for e in parks if e.settled is not None) == [1, 2]
    assert all(e.at_ms is not None and e.at_ms < start + HOUR + 5_000 for e in parks)
    ring = set(TOPICS.ring.topics())
    assert all(r.topic in ring for e in parks for r in e.records), "a park is a ring copy"


def test_a_topic_quarantined_in_the_middle_of_a_run_holds_the_rest_until_it_ends() -> None:
    """The destination refused the first record transiently: the others, due meanwhile, wait
    for the quarantine's end (spending no attempt) and are then produced as attempt 1."""
    quarantine_ms = DispatchSettings().destination_quarantine_ms

    def refuse_the_first() -> None:
        if len(h.sink.emitted) == 1 and not refused:
            [first] = h.sink.emitted
            assert first.on_refused is not None
            refused.append(True)
            first.on_refused(Refusal("REQUEST_TIMED_OUT", permanent=False, detail="slow"))

    refused: list[bool] = []
    h = build(settings=PREFETCH, on_sleep=refuse_the_first)
    start = h.clock.now_ms()
    messages = [h.message(KAFKA_APP, due_in_ms=10 * i, message_id=m) for i, m in enumerate(ids(3))]
    accept_all(h, messages)
    asyncio.run(h.dispatcher.fire_due())

    later = [e for e in h.sink.emitted[1:] if e.records and e.records[0].topic == "dest.topic"]
    assert len(later) == 2
    assert all(e.at_ms is not None and e.at_ms >= start + quarantine_ms for e in later)
    results = [r for r in h.sink.results() if r.message_id != messages[0].message_id]
    assert [(r.outcome, r.attempt) for r in results] == [(DeliveryOutcome.SENT, 1)] * 2


def test_a_view_that_fell_behind_while_the_run_read_its_app_holds_the_group() -> None:
    """The view was current when the first message's instant came, then fell behind the guard
    while the run read its app: the group waits for the view, as each message alone would."""
    read_at: list[int] = []

    def read_the_view_later() -> None:
        if h.commands.unread and h.clock.now_ms() >= lagged_at[0] + 100:
            h.commands.read()
            read_at.append(h.clock.now_ms())

    h = build(settings=PREFETCH, on_sleep=read_the_view_later)
    lagged_at: list[int] = []
    real_get = h.apps.get_app
    calls: list[str] = []

    def slow_get(app_id: str) -> Application | None:
        calls.append(app_id)
        if len(calls) == 2:  # the run's own read, after the first message's instant came
            h.commands.arrive()  # a command the view has not read yet ...
            h.clock.advance(300)  # ... while the read takes longer than the guard
            lagged_at.append(h.clock.now_ms())
        return real_get(app_id)

    h.apps.get_app = slow_get  # type: ignore[method-assign]
    messages = [h.message(KAFKA_APP, due_in_ms=0, message_id=m) for m in ids(2)]
    accept_all(h, messages)
    asyncio.run(h.dispatcher.fire_due())

    assert read_at, "the view was read again"
    assert produced_ids(h) == [m.message_id for m in messages]
    assert all(e.at_ms is not None and e.at_ms >= read_at[0] for e in h.sink.emitted)


@pytest.mark.parametrize("failing", ["app read", "topic check"])
def test_a_run_whose_app_or_topic_cannot_be_read_hands_its_attempts_back(failing: str) -> None:
    """The run's own read of its app (Cassandra down) or check of its topic (the producer's
    metadata: Kafka restarting, a fenced producer) fails: the attempts go back to the timer
    queue and are fired on the next pass, none lost or left in flight unsettled."""
    h = build(settings=PREFETCH)
    real_get = h.apps.get_app
    reads: list[str] = []

    def get_app(app_id: str) -> Application | None:
        reads.append(app_id)
        if failing == "app read" and len(reads) == 2:  # the run's read, after _fire_batch's
            raise ConnectionError("Cassandra is down")
        return real_get(app_id)

    h.apps.get_app = get_app  # type: ignore[method-assign]
    if failing == "topic check":
        real_exists = h.dispatcher._topic_check.exists
        checks: list[str] = []

        async def exists(topic: str) -> bool:
            checks.append(topic)
            if len(checks) == 1:
                raise RuntimeError("metadata request failed")
            return await real_exists(topic)

        h.dispatcher._topic_check.exists = exists  # type: ignore[method-assign]
    messages = [h.message(KAFKA_APP, due_in_ms=0, message_id=m) for m in ids(2)]
    accept_all(h, messages)

    asyncio.run(h.dispatcher.fire_due())
    assert produced_ids(h) == [] and len(h.dispatcher.timers) == 2
    assert h.dispatcher.in_flight == 0

    assert asyncio.run(h.dispatcher.fire_due()) == 2
    assert produced_ids(h) == [m.message_id for m in messages]
    assert sorted(e.settled.offset for e in h.sink.emitted if e.settled is not None) == [0, 1]


def test_the_in_flight_gauge_falls_back_to_zero_once_the_firing_tasks_are_done() -> None:
    """Before: it was set only when a task was spawned, so it showed the last spawn's count
    long after those tasks had finished (unless a test or shutdown drained them)."""
    h = build()
    accept_all(h, [h.message(KAFKA_APP, due_in_ms=0, message_id=i) for i in ids(3)])

    async def fire_and_let_finish() -> None:
        assert h.dispatcher.start_due() == 3
        assert h.metric("scheduler_dispatch_in_flight") == 1  # one run for the app
        while h.dispatcher.in_flight:
            await asyncio.sleep(0)

    asyncio.run(fire_and_let_finish())
    assert len(produced_ids(h)) == 3
    assert h.metric("scheduler_dispatch_in_flight") == 0


def test_every_committed_delivery_is_counted_for_its_app() -> None:
    """The per-app count of KAFKA deliveries is taken once per transaction: after the commit,
    each app has exactly its own deliveries, and the destination total has them all."""
    other = dataclasses.replace(KAFKA_APP, app_id="app-kafka-2")
    h = build(apps=(KAFKA_APP, other))
    names = ids(7)
    messages = [
        h.message(KAFKA_APP if i < 4 else other, due_in_ms=0, message_id=names[i]) for i in range(7)
    ]
    accept_all(h, messages)
    asyncio.run(h.dispatcher.fire_due())
    assert len(produced_ids(h)) == 7
    nothing_yet = {"app": KAFKA_APP.app_id, "outcome": "sent"}
    assert not h.metric("scheduler_dispatch_app_attempts_total", nothing_yet)  # not committed

    h.sink.commit(h.clock.now_ms())
    h.sink.commit(h.clock.now_ms())  # a second transaction with the same deliveries in it

    sent = {
        app.app_id: h.metric(
            "scheduler_dispatch_app_attempts_total", {"app": app.app_id, "outcome": "sent"}
        )
        for app in (KAFKA_APP, other)
    }
    assert sent == {KAFKA_APP.app_id: 8, other.app_id: 6}
    total = {"destination": "KAFKA", "outcome": "sent", "reason": "produced"}
    assert h.metric("scheduler_dispatch_attempts_total", total) == 14
