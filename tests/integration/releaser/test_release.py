"""Long-horizon flow on the real stack: Cassandra buckets -> releaser (two replicas, one
leader) -> ring -> dispatcher -> HTTP receiver and Kafka destination."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from prometheus_client import CollectorRegistry

from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.store.ports import Application, LogEntry, MessageContent, StatusUpdate
from scheduler_releaser.metrics import ReleaseMetrics
from scheduler_releaser.releaser.runtime import run_releaser
from scheduler_releaser.settings import DispatchSettings, ReleaseSettings

from .conftest import CLOCK, Env, Receiver, RunningDispatcher, eventually
from .test_dispatch import create_topic, delete_topic, due_message, read_all, rest_app

pytestmark = pytest.mark.integration


class ReleaserThread:
    def __init__(self, env: Env, name: str) -> None:
        self.metrics = ReleaseMetrics(CollectorRegistry())
        self.stop = threading.Event()
        settings = ReleaseSettings(
            tick_ms=200, session_timeout_ms=6_000, initial_backfill_ms=5_000, metrics_port=0
        )
        self.thread = threading.Thread(
            target=run_releaser,
            kwargs={
                "kafka": env.kafka,
                "scheduling": env.scheduling,
                "settings": settings,
                "buckets": env.stores.buckets,
                "messages": env.stores.messages,
                "apps": env.stores.apps,
                "clock": CLOCK,
                "metrics": self.metrics,
                "stop": self.stop,
            },
            name=name,
            daemon=True,
        )
        self.thread.start()

    @property
    def leader(self) -> bool:
        return self.metrics.leader._value.get() == 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def store(env: Env, m: DueMessage) -> None:
    """What the bucketer leaves for a long-horizon message: a stored READY record and a bucket
    row."""
    bucket = bucket_start(m.due_ms, env.scheduling.bucket_width_ms)
    env.stores.messages.save(
        MessageContent(
            app_id=m.app_id,
            message_id=m.message_id,
            payload_json=m.payload_json,
            send_at_ms=m.send_at_ms,
            created_ms=m.created_ms,
        ),
        StatusUpdate(Status.READY, 0, 1, m.due_ms, CLOCK.now_ms(), stored=True),
        LogEntry(CLOCK.now_ms(), "0:1:scheduled:stored", Status.READY, {"bucket_ms": bucket}),
    )
    env.stores.buckets.store(bucket, shard_of(m.message_id, env.scheduling.shards_per_bucket), m)


def test_stored_messages_are_released_by_one_leader_and_delivered_once_on_time(
    env: Env, receiver: Receiver
) -> None:
    dest = f"dest-{uuid.uuid4().hex[:8]}"
    create_topic(env, dest)
    env.add_app(rest_app("rest", receiver.url("/ok")))
    env.add_app(Application(app_id="kafka", owner_id="o", name="k", type="KAFKA", endpoint=dest))
    env.add_app(rest_app("gone", receiver.url("/ok")))
    now = CLOCK.now_ms()
    # due 6..19 s ahead: beyond the 4 s look-ahead (through the buckets), and past the
    # moment the first leader leaves (10 s)
    rest = [due_message("rest", now + 6_000 + 700 * i) for i in range(20)]
    kafka = [due_message("kafka", now + 6_000 + 200 * i, f'{{"i": {i}}}') for i in range(20)]
    for m in [*rest, *kafka]:
        store(env, m)
    from dataclasses import replace

    env.add_app(replace(rest_app("gone", receiver.url("/ok")), deleted_ms=now))
    gone = due_message("gone", now + 6_500)
    store(env, gone)
    settings = DispatchSettings(allow_private_destinations=True, metrics_port=0)
    everything = [*rest, *kafka, gone]

    def all_terminal() -> bool:
        views = [env.stores.messages.get(m.app_id, m.message_id) for m in everything]
        return all(v is not None and v.state.status.terminal for v in views)

    first, second = ReleaserThread(env, "releaser-a"), ReleaserThread(env, "releaser-b")
    leaders: list[int] = []

    async def scenario() -> None:
        async with RunningDispatcher(env, settings):
            for _ in range(40):
                leaders.append(int(first.leader) + int(second.leader))
                await asyncio.sleep(0.25)
            # the leader goes away mid-stream: the other replica takes over the release
            (first if first.leader else second).close()
            await eventually(all_terminal, timeout_s=40)

    try:
        asyncio.run(scenario())
    finally:
        for r in (first, second):
            if r.thread.is_alive():
                r.close()
    try:
        assert max(leaders) == 1, "two releasers led at once"
        assert leaders[-1] == 1
        by_id = {m.message_id: m for m in rest}
        assert sorted(receiver.ids("/ok")) == sorted(by_id)
        for r in receiver.received:
            assert r.at_ms >= by_id[r.headers["x-scheduler-message-id"]].due_ms, "early"
        records = read_all(env, dest, expected=len(kafka))
        assert sorted(m.key().decode() for m in records) == sorted(m.message_id for m in kafka)
        for m in [*rest, *kafka]:
            view = env.stores.messages.get(m.app_id, m.message_id)
            assert view.state.status is Status.SENT
            ids = [e.entry_id for e in env.stores.messages.logs(m.app_id, m.message_id)]
            assert "0:1:released" in ids and "0:1:sent" in ids
        assert env.stores.messages.get("gone", gone.message_id).state.status is Status.ABORTED
        assert env.stores.buckets.watermark() > max(m.due_ms for m in everything)
    finally:
        delete_topic(env, dest)
