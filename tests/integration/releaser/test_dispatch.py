"""The dispatcher against real Kafka and Cassandra, a local HTTP receiver and a Kafka
destination read with a read_committed consumer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.domain.ids import new_message_id
from scheduler.domain.status import Status
from scheduler.records import Command, CommandKind, DueMessage
from scheduler.store.ports import Application
from scheduler_releaser.settings import DispatchSettings

from .conftest import CLOCK, Env, Receiver, RunningDispatcher, eventually

pytestmark = pytest.mark.integration

SETTINGS = DispatchSettings(
    allow_private_destinations=True,
    max_attempts=3,
    backoff_base_ms=200,
    # long enough that an "ok" POST never times out on a loaded host (0.5 s did once at load
    # 30: attempt 2 was SENT and the test's first-attempt lateness check failed), short enough
    # that the hanging app's three attempts time out within the test's 40 s
    http_timeout_s=2.0,
    metrics_port=0,
)


def rest_app(app_id: str, url: str) -> Application:
    return Application(
        app_id=app_id,
        owner_id="owner",
        name=app_id,
        type="REST",
        endpoint=url,
        signing_secret="secret",
    )


def due_message(app_id: str, due_ms: int, payload: str = '{"n": 1}') -> DueMessage:
    now = CLOCK.now_ms()
    return DueMessage(
        message_id=new_message_id(now),
        app_id=app_id,
        generation=0,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=now,
        payload_json=payload,
    )


def create_topic(env: Env, name: str) -> None:
    admin = AdminClient(env.kafka.client_config())
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result()


def delete_topic(env: Env, name: str) -> None:
    admin = AdminClient(env.kafka.client_config())
    for future in admin.delete_topics([name]).values():
        future.result()


def read_all(env: Env, topic: str, expected: int, timeout_s: float = 20) -> list:
    consumer = env.consumer(topic, f"reader-{uuid.uuid4().hex[:6]}")
    out = []
    deadline = CLOCK.monotonic_ms() + timeout_s * 1000
    try:
        while len(out) < expected and CLOCK.monotonic_ms() < deadline:
            for msg in consumer.consume(100, timeout=0.2):
                if msg.error() is None:
                    out.append(msg)
        # and nothing more arrives shortly after
        end = CLOCK.monotonic_ms() + 1_000
        while CLOCK.monotonic_ms() < end:
            out += [m for m in consumer.consume(100, timeout=0.2) if m.error() is None]
    finally:
        consumer.close()
    return out


def test_rest_and_kafka_deliveries_on_time_once_with_retries_failures_and_abort(
    env: Env, receiver: Receiver
) -> None:
    env.releaser_is_current()
    dest = f"dest-{uuid.uuid4().hex[:8]}"
    create_topic(env, dest)
    apps = {
        "ok": rest_app("ok", receiver.url("/ok")),
        "flaky": rest_app("flaky", receiver.url("/fail/2/flaky")),
        "always": rest_app("always", receiver.url("/always")),
        "hang": rest_app("hang", receiver.url("/hang")),
        "redirect": rest_app("redirect", receiver.url("/redirect")),
        "kafka": Application(
            app_id="kafka", owner_id="owner", name="k", type="KAFKA", endpoint=dest
        ),
    }
    for app in apps.values():
        env.add_app(app)
    now = CLOCK.now_ms()
    ok = [due_message("ok", now + 1_500 + 50 * i) for i in range(20)]
    ok.append(due_message("ok", now - 3_000))  # past due: fires at once
    kafka = [due_message("kafka", now + 1_500 + 30 * i, f'{{"k": {i}}}') for i in range(10)]
    single = {
        name: due_message(name, now + 1_500) for name in ("flaky", "always", "hang", "redirect")
    }
    aborted = due_message("ok", now + 2_500)
    for m in [*ok, *kafka, *single.values()]:
        env.schedule(m)
    env.schedule(aborted, Status.ABORTED)  # abort route: record first (conditional write) ...
    env.producer.produce(  # ... then the command
        env.topics.commands,
        key=aborted.message_id.encode(),
        value=env.codecs.command.encode(
            Command(
                message_id=aborted.message_id,
                app_id="ok",
                kind=CommandKind.ABORT,
                generation=0,
                issued_ms=now,
            )
        ),
    )
    env.flush()
    everything = [*ok, *kafka, *single.values(), aborted]

    def all_terminal() -> bool:
        views = [env.stores.messages.get(m.app_id, m.message_id) for m in everything]
        return all(v is not None and v.state.status.terminal for v in views)

    async def scenario() -> RunningDispatcher:
        async with RunningDispatcher(env, SETTINGS) as d:
            await eventually(all_terminal, timeout_s=40)
        return d

    d = asyncio.run(scenario())
    try:
        # REST: each ok message exactly once, never early
        by_id = {m.message_id: m for m in ok}
        got = receiver.ids("/ok")
        assert sorted(got) == sorted(by_id)
        for r in receiver.received:
            mid = r.headers["x-scheduler-message-id"]
            if mid in by_id:
                assert r.at_ms >= by_id[mid].due_ms, "delivered early"
        for m in ok:
            view = env.stores.messages.get("ok", m.message_id)
            assert view is not None and view.state.status is Status.SENT
            # never early on the raw instants (lateness_ms is clamped at 0): finished at or
            # after the due instant, and the lateness is exactly the difference
            assert view.state.at_ms >= m.due_ms, "SENT before its due instant"
            assert view.state.lateness_ms == view.state.at_ms - m.due_ms
            events = [e.entry_id for e in env.stores.messages.logs("ok", m.message_id)]
            assert "0:1:sent" in events
        assert aborted.message_id not in got
        assert env.stores.messages.get("ok", aborted.message_id).state.status is Status.ABORTED
        # flaky: two 503s, then delivered on attempt 3
        flaky = env.stores.messages.get("flaky", single["flaky"].message_id)
        assert (flaky.state.status, flaky.state.attempt) == (Status.SENT, 3)
        assert len(receiver.ids("/fail")) == 3
        # always failing: FAILED after 3 attempts, with a dead letter
        always = env.stores.messages.get("always", single["always"].message_id)
        assert (always.state.status, always.state.attempt) == (Status.FAILED, 3)
        assert always.state.http_status == 500
        assert len(receiver.ids("/always")) == 3
        # hanging: timeouts are retried, then FAILED
        hang = env.stores.messages.get("hang", single["hang"].message_id)
        assert hang.state.status is Status.FAILED and "timeout" in (hang.state.error or "")
        # redirect: not followed, failed at once
        redirect = env.stores.messages.get("redirect", single["redirect"].message_id)
        assert (redirect.state.status, redirect.state.attempt) == (Status.FAILED, 1)
        assert len(receiver.ids("/redirect")) == 1
        dead = read_all(env, env.topics.dead_letter, expected=3)
        assert sorted(env.codecs.dead_letter.decode(m.value()).app_id for m in dead) == [
            "always",
            "hang",
            "redirect",
        ]
        # KAFKA: every message exactly once for a read_committed consumer, key + headers
        records = read_all(env, dest, expected=len(kafka))
        assert sorted(m.key().decode() for m in records) == sorted(m.message_id for m in kafka)
        for msg in records:
            headers = dict(msg.headers())
            assert headers["X-Scheduler-Message-Id"] == msg.key()
        for m in kafka:
            assert env.stores.messages.get("kafka", m.message_id).state.status is Status.SENT
        assert d.metric("scheduler_dispatch_lateness_seconds_count", {"destination": "REST"}) >= 21
        assert d.metric("scheduler_dispatch_lateness_seconds_count", {"destination": "KAFKA"}) == 10
    finally:
        delete_topic(env, dest)


def test_private_destination_is_refused_unless_allowed(env: Env, receiver: Receiver) -> None:
    env.releaser_is_current()
    env.add_app(rest_app("local", receiver.url("/ok")))
    m = due_message("local", CLOCK.now_ms())
    env.schedule(m)
    env.flush()
    strict = DispatchSettings(allow_private_destinations=False, metrics_port=0)

    def failed() -> bool:
        view = env.stores.messages.get("local", m.message_id)
        return view is not None and view.state.status is Status.FAILED

    async def scenario() -> None:
        async with RunningDispatcher(env, strict):
            await eventually(failed)

    asyncio.run(scenario())
    assert receiver.received == []
    view = env.stores.messages.get("local", m.message_id)
    assert "non-public address" in (view.state.error or "")


def test_a_hanging_app_does_not_delay_another_apps_deliveries(env: Env, receiver: Receiver) -> None:
    env.releaser_is_current()
    env.add_app(rest_app("warm", receiver.url("/warm")))
    env.add_app(rest_app("slow", receiver.url("/hang")))
    env.add_app(rest_app("fast", receiver.url("/ok")))
    settings = DispatchSettings(
        allow_private_destinations=True,
        per_app_concurrency=2,
        http_timeout_s=1.0,
        max_attempts=1,
        metrics_port=0,
    )
    fast: list[DueMessage] = []

    def schedule(messages: list[DueMessage]) -> None:
        for m in messages:
            env.schedule(m)
        env.flush()

    async def scenario() -> None:
        async with RunningDispatcher(env, settings):
            # Scheduled once the dispatcher has delivered a first message: a start-up slower
            # than the lead below (2 s on a cold stack) would make every message overdue at
            # once and measure the start-up, not the isolation between apps.
            await asyncio.to_thread(schedule, [due_message("warm", CLOCK.now_ms())])
            await eventually(lambda: receiver.ids("/warm"), timeout_s=20)
            now = CLOCK.now_ms()
            slow = [due_message("slow", now + 1_500) for _ in range(10)]
            fast.extend(due_message("fast", now + 1_600 + 50 * i) for i in range(10))
            await asyncio.to_thread(schedule, [*slow, *fast])
            await eventually(lambda: len(receiver.ids("/ok")) == len(fast), timeout_s=20)

    asyncio.run(scenario())
    due = {m.message_id: m.due_ms for m in fast}
    lateness = [
        r.at_ms - due[r.headers["x-scheduler-message-id"]]
        for r in receiver.received
        if r.path == "/ok"
    ]
    # The slow app's 10 requests hold its 2 slots for ~5 s; the fast app is served meanwhile,
    # late by milliseconds: the REST benchmark's max at 100/s is 31-40 ms on a quiet machine,
    # this test saw at most 171 ms on 2 cores busy with other test runs. A fast delivery held
    # behind even one hanging request would arrive after that request's 1 s timeout, at least
    # 450 ms late (the last fast one is due 550 ms after the slow ones): 300 ms tells them apart.
    assert max(lateness) < 300, sorted(lateness)
    assert min(lateness) >= 0, sorted(lateness)  # raw receipt - due: never early


def test_abort_just_before_due_wins_and_redrive_after_failure_delivers(
    env: Env, receiver: Receiver
) -> None:
    from dataclasses import replace

    env.releaser_is_current()
    env.add_app(rest_app("ok", receiver.url("/ok")))
    env.add_app(rest_app("flaky", receiver.url("/fail/3/redrive")))  # fails 3 times, then 200
    now = CLOCK.now_ms()
    held = due_message("ok", now + 3_000)  # in memory well before it is aborted
    failing = due_message("flaky", now + 1_000)
    env.schedule(held)
    env.schedule(failing)
    env.flush()
    settings = DispatchSettings(
        allow_private_destinations=True, max_attempts=3, backoff_base_ms=200, metrics_port=0
    )

    def status(app: str, m: DueMessage) -> Status:
        view = env.stores.messages.get(app, m.message_id)
        return view.state.status if view is not None else None

    async def scenario() -> None:
        async with RunningDispatcher(env, settings):
            # the abort route, just outside the guard: record first, then the command
            guard = env.scheduling.cancel_guard_ms
            await asyncio.sleep(max(0, held.due_ms - guard - 100 - CLOCK.now_ms()) / 1000)
            assert CLOCK.now_ms() < held.due_ms - guard
            env.schedule(held, Status.ABORTED)  # (re-produces the ring copy too: a duplicate)
            env.producer.produce(
                env.topics.commands,
                key=held.message_id.encode(),
                value=env.codecs.command.encode(
                    Command(
                        message_id=held.message_id,
                        app_id="ok",
                        kind=CommandKind.ABORT,
                        generation=0,
                        issued_ms=CLOCK.now_ms(),
                    )
                ),
            )
            env.flush()
            await eventually(lambda: status("flaky", failing) is Status.FAILED)
            # redrive (what the ingest route does): a new generation, attempt count reset
            redriven = replace(failing, generation=1, attempt=1, due_ms=CLOCK.now_ms())
            env.schedule(redriven, Status.READY)
            env.flush()
            await eventually(lambda: status("flaky", failing) is Status.SENT)
            await asyncio.sleep(max(0, held.due_ms + 500 - CLOCK.now_ms()) / 1000)

    asyncio.run(scenario())
    assert held.message_id not in receiver.ids("/ok")
    assert status("ok", held) is Status.ABORTED
    view = env.stores.messages.get("flaky", failing.message_id)
    assert (view.state.generation, view.state.attempt) == (1, 1)
    assert len(receiver.ids("/fail")) == 4
    dead = read_all(env, env.topics.dead_letter, expected=1)
    assert [env.codecs.dead_letter.decode(m.value()).message_id for m in dead] == [
        failing.message_id
    ]
