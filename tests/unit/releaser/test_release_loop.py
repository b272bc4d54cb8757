"""The releaser's main loop (ReleaseLoop) through a Kafka broker outage, step by step: a fake
lease consumer whose group callbacks the test queues, fake transactional producers that fail
while "the broker is down", a ManualClock advanced by the time each blocking call would take.

The finding (docs/CHAOS.md, "Seed 4242 again (second run)"): after a broker outage the leader
logged "ring transaction could not be aborted", then "lost the release lease", and no bucket
was released for 12 minutes while neither releaser exited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import CollectorRegistry

from scheduler.clock import ManualClock
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.status import Status
from scheduler.ops import Health
from scheduler.records import DueMessage
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from scheduler.testing.fakes import InMemoryApps, InMemoryBucketStore, InMemoryMessageStore
from scheduler_releaser.metrics import ReleaseMetrics
from scheduler_releaser.releaser.core import Releaser
from scheduler_releaser.releaser.runtime import (
    COMMIT_TIMEOUT_S,
    INIT_TIMEOUT_S,
    KafkaRingPublisher,
    Leadership,
    ReleaseLoop,
)

from .harness import CODECS, REST_APP, SCHEDULING, TOPICS

pytestmark = pytest.mark.unit
WIDTH = SCHEDULING.bucket_width_ms
STALE_AFTER_MS = 300_000  # main.py: max(300 s, 10 ticks)
SESSION_MS = 6_000
TICK_MS = 1_000
LOST = KafkaError(KafkaError._TIMED_OUT, "Transactional API operation timed out", retriable=True)


class Broker:
    """What every fake client sees: up or down, and the ring records committed so far."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.down = False
        self.committed: list[str] = []


class FakeProducer:
    """A transactional producer: while the broker is down, init/commit/abort block for their
    whole timeout (the clock moves) and raise, as librdkafka does."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.queued: list[str] = []

    def _unreachable(self, timeout: float) -> None:
        if self.broker.down:
            self.broker.clock.advance(int(timeout * 1000))
            raise KafkaException(LOST)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        self._unreachable(timeout)
        return object()

    def init_transactions(self, timeout: float) -> None:
        self._unreachable(timeout)

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.queued.append(key.decode())

    def commit_transaction(self, timeout: float) -> None:
        self._unreachable(timeout)
        self.broker.committed += self.queued
        self.queued = []

    def abort_transaction(self, timeout: float) -> None:
        self._unreachable(timeout)
        self.queued = []

    def flush(self, timeout: float) -> int:
        return 0


class FakeLeaseConsumer:
    """The lease group as seen by one member: `poll` serves the callbacks the test queued."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.on_assign: Callable[[Any, list[Any]], None] | None = None
        self.on_revoke: Callable[[Any, list[Any]], None] | None = None
        self.events: list[str] = []

    def subscribe(self, topics: list[str], *, on_assign: Any, on_revoke: Any) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def poll(self, timeout: float) -> None:
        self.clock.advance(int(timeout * 1000))
        events, self.events = self.events, []
        for event in events:
            callback = self.on_assign if event == "assign" else self.on_revoke
            assert callback is not None
            callback(self, ["lease[0]"])
        return None


class Replica:
    """One releaser process: its lease consumer, publisher, health and loop."""

    def __init__(self, clock: ManualClock, broker: Broker, world: World) -> None:
        self.consumer = FakeLeaseConsumer(clock)
        self.producers: list[FakeProducer] = []

        def make() -> Producer:
            self.producers.append(FakeProducer(broker))
            return self.producers[-1]  # type: ignore[return-value]

        self.publisher = KafkaRingPublisher(make, TOPICS, CODECS)
        self.health = Health(clock, stale_after_ms=STALE_AFTER_MS)
        metrics = ReleaseMetrics(CollectorRegistry())
        self.leadership = Leadership(
            self.consumer,  # type: ignore[arg-type]
            "lease",
            lambda lead: metrics.leader.set(lead),
        )
        releaser = Releaser(
            clock=clock,
            scheduling=SCHEDULING,
            buckets=world.buckets,
            messages=world.messages,
            apps=world.apps,
            publisher=self.publisher,
            writers=ThreadPoolExecutor(2),
            metrics=metrics,
            initial_backfill_ms=10_000,
        )
        self.loop = ReleaseLoop(
            leadership=self.leadership,
            publisher=self.publisher,
            releaser=releaser,
            health=self.health,
            clock=clock,
            metrics=metrics,
            session_timeout_ms=SESSION_MS,
            tick_s=TICK_MS / 1000,
            stop=threading.Event(),
        )

    # Methods, not properties: mypy would narrow a property across loop.step() calls.
    def started(self) -> bool:
        return self.publisher.started

    def leads(self) -> bool:
        return self.leadership.is_leader

    @property
    def alive(self) -> bool:
        return self.health.alive()[0]


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.broker = Broker(self.clock)
        self.buckets = InMemoryBucketStore()
        self.messages = InMemoryMessageStore(release=self.buckets)
        self.apps = InMemoryApps(REST_APP)

    def store(self, n: int, due_ms: int) -> DueMessage:
        m = DueMessage(
            message_id=f"01J{n:023d}",
            app_id=REST_APP.app_id,
            generation=0,
            attempt=1,
            due_ms=due_ms,
            send_at_ms=due_ms,
            created_ms=0,
            payload_json="1",
        )
        self.messages.save(
            MessageContent(
                app_id=m.app_id,
                message_id=m.message_id,
                payload_json="1",
                send_at_ms=due_ms,
                created_ms=0,
            ),
            StatusUpdate(Status.READY, 0, 1, due_ms, 0, stored=True),
            LogEntry(0, "0:1:scheduled", Status.READY),
        )
        self.buckets.store(bucket_start(due_ms, WIDTH), shard_of(m.message_id, 8), m)
        return m

    def status(self, m: DueMessage) -> Status:
        view = self.messages.get(m.app_id, m.message_id)
        assert view is not None
        return view.state.status


def next_bucket(world: World) -> int:
    """A due time just past the current claim: the next tick (1 s later) claims and releases it
    (a store into an already claimed bucket would be sent directly by its store instead)."""
    return world.clock.now_ms() + SCHEDULING.lookahead_ms + WIDTH // 2


def leading(world: World) -> Replica:
    replica = Replica(world.clock, world.broker, world)
    replica.consumer.events.append("assign")
    replica.loop.step()
    assert replica.leads() and replica.started()
    return replica


def test_the_chaos_sequence_abort_failed_then_lease_lost_then_regained_releases_again() -> None:
    """'could not be aborted' -> 'lost the release lease' -> the broker back -> assigned again:
    no flag is left behind (publisher closed, fence timer reset), a new producer is started and
    the bucket stored meanwhile is released."""
    w = World()
    a = leading(w)
    w.broker.down = True
    m = w.store(1, next_bucket(w))
    a.loop.step()  # commit times out, abort times out: "a new producer takes over"
    assert not a.started() and w.status(m) is Status.READY
    a.consumer.events.append("revoke")  # the session ran out while the broker was down
    a.loop.step()
    assert not a.leads()
    for _ in range(60):  # a standby for a minute: alive, nothing to do
        a.loop.step()
        assert a.alive
    w.broker.down = False
    a.consumer.events.append("assign")
    a.loop.step()
    assert a.leads() and w.status(m) is Status.QUEUED
    assert w.broker.committed == [m.message_id] and len(a.producers) == 2
    assert a.health.ready() == (True, "leading")


def test_a_standby_assigned_while_the_broker_is_still_down_keeps_trying_until_it_leads() -> None:
    """The other replica gets the lease first; its init_transactions fails while the broker is
    down and is retried on every later step, not once."""
    w = World()
    b = Replica(w.clock, w.broker, w)
    b.loop.step()
    assert not b.leads()
    w.broker.down = True
    m = w.store(1, w.clock.now_ms() + 120_000)
    b.consumer.events.append("assign")
    for _ in range(3):
        b.loop.step()
        assert not b.started()
    assert b.health.ready()[0] is False
    w.broker.down = False
    b.loop.step()
    assert b.started()
    w.clock.advance(120_000)
    b.loop.step()
    assert w.status(m) is Status.QUEUED


@pytest.mark.parametrize("failing", ["producer never initialises", "every tick fails"])
def test_a_leader_that_cannot_release_fails_liveness_so_the_lease_can_move(failing: str) -> None:
    """A leader that keeps the lease (its consumer heartbeats in librdkafka's own thread) but
    never completes a tick blocks the standby for good: nothing else ever frees the lease.
    Before the fix the loop beat /healthz on every iteration, releasing or not."""
    w = World()
    a = leading(w)
    if failing == "producer never initialises":
        w.broker.down = True  # every start() times out in init_transactions
        a.publisher.close()
    else:
        a.publisher.close()
        a.loop.step()  # started again while the broker is up
        assert a.started()
        w.broker.down = True
    m = w.store(1, next_bucket(w))
    started = w.clock.monotonic_ms()
    while w.clock.monotonic_ms() - started <= STALE_AFTER_MS:
        assert a.leads()
        a.loop.step()
        w.store(2, next_bucket(w))  # work keeps arriving
    assert w.status(m) is Status.READY
    alive, why = a.health.alive()
    assert not alive, "a leader that released nothing for the whole stale window looks alive"
    assert "silent" in why
    # A healthy leader stays alive across the same stretch.
    w2 = World()
    c = leading(w2)
    for _ in range(int(STALE_AFTER_MS / TICK_MS) + 5):
        c.loop.step()
    assert c.alive


def test_a_fenced_leader_waits_then_fences_back_without_failing_liveness() -> None:
    """The fence wait (2 session timeouts) is far inside the stale window: no restart for it."""
    w = World()
    a = leading(w)
    a.producers[0].commit_transaction = _fenced  # type: ignore[method-assign]
    w.store(1, next_bucket(w))
    a.loop.step()
    assert not a.started()
    for _ in range(2 * SESSION_MS // TICK_MS + 1):
        a.loop.step()
    assert a.started() and a.alive
    assert COMMIT_TIMEOUT_S * 1000 < STALE_AFTER_MS and INIT_TIMEOUT_S * 1000 < STALE_AFTER_MS


def _fenced(timeout: float) -> None:
    raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
