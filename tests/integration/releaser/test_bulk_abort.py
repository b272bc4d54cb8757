"""One tenant's bulk abort does not hold up another tenant's firing (commands.py: the view is
fresh per partition), on the real broker: 1,000 ABORT commands/s spread over 6 commands
partitions (the production count) for 6 s while tenant A's messages come due at 50/s, with the
production cancel guard (500 ms): the aborts are applied, A's messages all arrive once and never
early, and the commands view stays within the guard. The lateness figure, with the dispatcher as
a process, at 100/s for 30 s: bench/dispatch_abort_bench.py."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.domain.ids import new_message_id
from scheduler.records import Command, CommandKind, DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import Application
from scheduler_releaser.settings import DispatchSettings

from .conftest import CLOCK, Env, RunningDispatcher

pytestmark = pytest.mark.integration

COMMANDS_PARTITIONS = 6
GUARD_MS = 500
RATE_A, ABORT_RATE = 50, 1_000
BEFORE_S, DURING_S, AFTER_S = 4, 6, 2
LAG = "scheduler_dispatch_commands_lag_seconds"


@pytest.fixture
def kafka_settings(kafka_settings: KafkaSettings) -> KafkaSettings:
    """The test's private topics (deleted by the shared fixture), with more command partitions."""
    return kafka_settings.model_copy(update={"commands_partitions": COMMANDS_PARTITIONS})


@pytest.fixture
def scheduling_settings(scheduling_settings: SchedulingSettings) -> SchedulingSettings:
    """The shared shrunk horizons, with the production cancel guard."""
    return scheduling_settings.model_copy(update={"cancel_guard_ms": GUARD_MS})


def message(app_id: str, due_ms: int, message_id: str | None = None) -> DueMessage:
    return DueMessage(
        message_id=message_id or new_message_id(CLOCK.now_ms()),
        app_id=app_id,
        generation=0,
        attempt=1,
        due_ms=due_ms,
        send_at_ms=due_ms,
        created_ms=CLOCK.now_ms(),
        payload_json="{}",
    )


def p99(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_a_bulk_abort_of_one_tenant_does_not_hold_up_another_tenants_firing(env: Env) -> None:
    env.releaser_is_current()
    dest = f"bulkdest-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(env.kafka.client_config())
    for future in admin.create_topics([NewTopic(dest, 1, 1)]).values():
        future.result()
    for app in ("a", "b"):
        env.add_app(Application(app_id=app, owner_id=app, name=app, type="KAFKA", endpoint=dest))
    first_due = CLOCK.now_ms() + 4_000
    abort_at = first_due + BEFORE_S * 1000
    abort_end = abort_at + DURING_S * 1000
    last_due = abort_end + AFTER_S * 1000
    planned = {}
    for i in range((last_due - first_due) * RATE_A // 1000):
        m = message("a", first_due + i * 1000 // RATE_A)
        planned[m.message_id] = m.due_ms
        env.producer.produce(
            env.topics.ring.topic_for(m.due_ms),
            key=m.message_id.encode(),
            value=env.codecs.due.encode(m),
        )
    aborted = [new_message_id(CLOCK.now_ms()) for _ in range(ABORT_RATE * DURING_S)]
    ringed = aborted[::60]  # 100 of them are in the ring, due after the bulk abort
    for i, message_id in enumerate(ringed):
        m = message("b", last_due + 1_000 + i * 10, message_id)
        env.producer.produce(
            env.topics.ring.topic_for(m.due_ms),
            key=m.message_id.encode(),
            value=env.codecs.due.encode(m),
        )
    env.flush()

    def bulk_abort() -> None:
        producer = Producer({**env.kafka.client_config(), "linger.ms": 2, "acks": "all"})
        while CLOCK.now_ms() < abort_at:
            threading.Event().wait(0.005)
        for i, message_id in enumerate(aborted):
            ahead_ms = abort_at + i * 1000 // ABORT_RATE - CLOCK.now_ms()
            if ahead_ms > 0:
                threading.Event().wait(ahead_ms / 1000)
            command = Command(
                message_id=message_id,
                app_id="b",
                kind=CommandKind.ABORT,
                generation=0,
                issued_ms=CLOCK.now_ms(),
            )
            producer.produce(
                env.topics.commands,
                key=message_id.encode(),
                value=env.codecs.command.encode(command),
            )
            producer.poll(0)
        assert producer.flush(10) == 0

    lags: list[tuple[int, float]] = []
    received: dict[str, list[int]] = {}
    consumer = env.consumer(dest, f"reader-{uuid.uuid4().hex[:6]}")

    async def scenario() -> None:
        settings = DispatchSettings(metrics_port=0, kafka_destination_prefixes=["bulkdest-"])
        async with RunningDispatcher(env, settings) as running:
            aborter = threading.Thread(target=bulk_abort, daemon=True)
            aborter.start()
            while CLOCK.now_ms() < last_due + 3_000:
                lags.append((CLOCK.now_ms(), running.metric(LAG)))
                for msg in consumer.consume(500, timeout=0):
                    if msg.error() is None:
                        received.setdefault((msg.key() or b"?").decode(), []).append(CLOCK.now_ms())
                await asyncio.sleep(0.01)
            await asyncio.to_thread(aborter.join, 10)

    try:
        asyncio.run(scenario())
    finally:
        consumer.close()
        for future in admin.delete_topics([dest], operation_timeout=30).values():
            future.result()
    lateness: dict[str, list[int]] = {"before": [], "during": []}
    for message_id, due in planned.items():
        arrivals = received.get(message_id, [])
        assert len(arrivals) == 1, (message_id, arrivals)  # delivered, once
        assert arrivals[0] >= due  # never early
        if due < abort_at:
            lateness["before"].append(arrivals[0] - due)
        elif due <= abort_end:
            lateness["during"].append(arrivals[0] - due)
    assert not set(ringed) & set(received)  # the aborts were applied
    during = [(at, lag * 1000) for at, lag in lags if abort_at <= at <= abort_end]
    over = sum(lag > GUARD_MS for _, lag in during)
    stale_ms = longest_stretch_above(during, GUARD_MS)
    print(
        f"A lateness p99 before {p99(lateness['before'])} ms, during {p99(lateness['during'])} ms;"
        f" commands lag during: max {max(lag for _, lag in during):.0f} ms, {over} of"
        f" {len(during)} samples above the guard, longest stretch {stale_ms} ms"
    )
    # Firing did not wait for the view: it stayed within the guard while the bulk abort ran. A
    # view that waited for every partition at once would be stale for the whole 6 s of the bulk
    # abort (every sample above the guard); a starved host delays a confirmation now and then
    # (a CI run at load sampled only 70 times in 6 s, 9 of them above the guard, one stretch).
    # So: the view is never stale for longer than 2 s on end, and for at most a fifth of the
    # samples. The lateness ratio (target: p99 during within 2x of before) is the benchmark's
    # figure: on a loaded 2-core host it varies too much run to run for an assertion.
    assert stale_ms <= 2_000, (stale_ms, over, len(during))
    assert over <= len(during) // 5, (over, len(during))


def longest_stretch_above(samples: list[tuple[int, float]], limit_ms: float) -> int:
    """The longest time (ms) from the first to the last of consecutive samples above `limit_ms`."""
    longest, start = 0, None
    for at, value in samples:
        if value > limit_ms:
            start = at if start is None else start
            longest = max(longest, at - start)
        else:
            start = None
    return longest
