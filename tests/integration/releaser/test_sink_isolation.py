"""One tenant's broken Kafka destination does not stall anyone else (real broker, real
dispatcher): its record leaves the transaction, its attempt fails with the broker's reason,
and every other tenant's deliveries are settled on time, exactly once.

Before the sink read delivery reports, the 4 KiB record for a topic with
`max.message.bytes=1024` aborted every transaction it rode in, forever: the REST messages below
were POSTed but never recorded SENT, and the dispatcher did not stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from prometheus_client import generate_latest

from scheduler.domain.status import Status
from scheduler.store.ports import Application

from .conftest import CLOCK, Env, Receiver, RunningDispatcher, eventually
from .test_dispatch import SETTINGS, create_topic, delete_topic, due_message, read_all, rest_app

pytestmark = pytest.mark.integration


def kafka_app(app_id: str, topic: str) -> Application:
    return Application(app_id=app_id, owner_id="owner", name=app_id, type="KAFKA", endpoint=topic)


def test_refused_kafka_records_fail_alone_and_every_other_tenant_is_settled(
    env: Env, receiver: Receiver
) -> None:
    env.releaser_is_current()
    small, gone, good = (f"dest-{name}-{uuid.uuid4().hex[:8]}" for name in ("small", "gone", "ok"))
    admin = AdminClient(env.kafka.client_config())
    for future in admin.create_topics(
        [NewTopic(small, 1, 1, config={"max.message.bytes": "1024"})]
    ).values():
        future.result()
    create_topic(env, gone)
    create_topic(env, good)
    apps = [
        rest_app("rest", receiver.url("/ok")),
        kafka_app("small", small),
        kafka_app("gone", gone),
        kafka_app("good", good),
    ]
    for app in apps:
        env.add_app(app)
    try:

        async def scenario() -> None:
            async with RunningDispatcher(env, SETTINGS) as d:
                # The "gone" topic is used once, so the dispatcher knows it, then deleted.
                first = due_message("gone", CLOCK.now_ms() + 200)
                env.schedule(first)
                env.flush()
                await eventually(lambda: _status(env, first) is Status.SENT, timeout_s=30)
                await asyncio.to_thread(delete_topic, env, gone)

                now = CLOCK.now_ms()
                big = json.dumps({"blob": "x" * 4096})
                too_large = due_message("small", now + 1_000, big)
                after_delete = due_message("gone", now + 1_000)
                rest = [due_message("rest", now + 1_000 + 20 * i) for i in range(40)]
                kafka = [due_message("good", now + 1_000 + 20 * i) for i in range(10)]
                for m in [too_large, after_delete, *rest, *kafka]:
                    env.schedule(m)
                env.flush()

                def rest_all_sent() -> bool:
                    return all(_status(env, m) is Status.SENT for m in rest + kafka)

                # Settled within seconds of their due time, not held by the refused records.
                await eventually(rest_all_sent, timeout_s=15)
                await eventually(lambda: _status(env, too_large) is Status.FAILED, timeout_s=15)
                await eventually(lambda: _status(env, after_delete) is Status.FAILED, timeout_s=30)
                assert d.metric(
                    "scheduler_dispatch_destination_refusals_total",
                    {"error": "MSG_SIZE_TOO_LARGE", "kind": "permanent"},
                )

                # Exactly once: every REST message POSTed once, every KAFKA record once.
                assert sorted(receiver.ids("/ok")) == sorted(m.message_id for m in rest)
                records = read_all(env, good, expected=len(kafka))
                assert sorted(r.key().decode() for r in records) == sorted(
                    m.message_id for m in kafka
                )
                for r in receiver.received:
                    due = {m.message_id: m.due_ms for m in rest}
                    assert r.at_ms >= due[r.headers["x-scheduler-message-id"]], "early"
                reason = env.stores.messages.get("small", too_large.message_id)
                assert reason is not None and "MSG_SIZE_TOO_LARGE" in (reason.state.error or "")
                gone_view = env.stores.messages.get("gone", after_delete.message_id)
                assert gone_view is not None and "UNKNOWN_TOPIC" in (gone_view.state.error or "")
                # Nothing is left in the transaction for SIGTERM to wait on (the exit of the
                # `async with` is bounded by RunningDispatcher's 30 s).

        asyncio.run(scenario())
    finally:
        for topic in (small, good):
            delete_topic(env, topic)


def _status(env: Env, message) -> Status | None:  # type: ignore[no-untyped-def]
    view = env.stores.messages.get(message.app_id, message.message_id)
    return None if view is None else view.state.status


def test_sigterm_stops_a_dispatcher_whose_transactions_keep_failing(
    env: Env, receiver: Receiver
) -> None:
    """The scheduler's own results topic refuses every result (max.message.bytes too small):
    every transaction fails and is retried. The stop must still finish within its bound (the
    wedged dispatcher used to ignore SIGTERM and need kill -9)."""
    env.releaser_is_current()
    app = rest_app("wedged", receiver.url("/ok"))
    env.add_app(app)
    admin = AdminClient(env.kafka.client_config())
    results = ConfigResource(ConfigResource.Type.TOPIC, env.topics.results)
    tiny = ConfigEntry("max.message.bytes", "64", incremental_operation=AlterConfigOpType.SET)
    back = ConfigEntry("max.message.bytes", "", incremental_operation=AlterConfigOpType.DELETE)

    def alter(entry: ConfigEntry) -> None:
        results.incremental_configs = [entry]
        for future in admin.incremental_alter_configs([results]).values():
            future.result()

    async def scenario() -> float:
        d = RunningDispatcher(env, SETTINGS)
        await d.__aenter__()
        await asyncio.to_thread(alter, tiny)
        for i in range(5):
            env.schedule(due_message(app.app_id, CLOCK.now_ms() + 300 + 10 * i))
        env.flush()
        await eventually(lambda: len(receiver.ids("/ok")) == 5, timeout_s=30)
        try:
            await eventually(
                lambda: (
                    d.metric("scheduler_dispatch_transactions_total", {"result": "aborted"}) >= 1
                ),
                timeout_s=60,
            )
        except AssertionError:
            print(generate_latest(d.registry).decode())
            raise
        started = CLOCK.monotonic_ms()
        d.stop.set()
        assert d.task is not None
        await asyncio.wait_for(d.task, 60)
        return (CLOCK.monotonic_ms() - started) / 1000

    try:
        stopped_in_s = asyncio.run(scenario())
    finally:
        alter(back)
    # Bound: the shutdown timeout (15 s) plus the record writer's and the producer's 10 s each.
    assert stopped_in_s < 40, f"stopped in {stopped_in_s:.1f} s"
