"""The failure notifier's consuming loop (failures/runtime.py) on a fake consumer and a
ManualClock: what is committed and when, pausing above the memory bound, rebalances, the stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from scheduler.records import DeadLetter
from scheduler_releaser.failures.runtime import NotifierLoop
from scheduler_releaser.settings import FailureNoticeSettings

from .failure_harness import DLQ, HOOK, SETTINGS, Notices, build, rest_failure_app
from .harness import CODECS, ManualSleep

pytestmark = pytest.mark.unit

TOPIC = DLQ[0]
DEAD = "https://dead.example/failed"


class Msg:
    def __init__(self, partition: int, offset: int, value: bytes | None) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return None


@dataclass
class LoopConsumer:
    """One topic's partitions as lists (None: a transaction marker, never returned)."""

    logs: dict[int, list[bytes | None]] = field(default_factory=lambda: {0: [], 1: []})
    assigned: set[int] = field(default_factory=lambda: {0, 1})
    read_to: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})
    paused: set[int] = field(default_factory=set)
    commits: list[tuple[dict[int, int], bool]] = field(default_factory=list)
    on_commit: Callable[[Any, list[TopicPartition]], None] | None = None

    def append(self, partition: int, value: bytes | None) -> int:
        self.logs[partition].append(value)
        return len(self.logs[partition]) - 1

    def committed(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for offsets, _ in self.commits:
            last.update(offsets)
        return last

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
        out = []
        for p in sorted(self.assigned - self.paused):
            log = self.logs[p]
            while self.read_to[p] < len(log) and len(out) < num_messages:
                offset = self.read_to[p]
                self.read_to[p] += 1
                if log[offset] is not None:
                    out.append(Msg(p, offset, log[offset]))
        return out

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(({tp.partition: tp.offset for tp in offsets}, asynchronous))
        if asynchronous and self.on_commit is not None:
            self.on_commit(None, offsets)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.assigned)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(TOPIC, tp.partition, self.read_to[tp.partition]) for tp in partitions
        ]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.logs[partition.partition])


@dataclass
class World:
    n: Notices
    consumer: LoopConsumer
    loop: NotifierLoop

    def dead_letter(self, app_id: str, k: int = 0, partition: int = 0) -> DeadLetter:
        letter = self.n.letter(app_id, k)
        self.consumer.append(partition, CODECS.dead_letter.encode(letter))
        return letter

    async def tick(self, times: int = 1) -> None:
        """A loop pass a commit interval later, then what it started runs."""
        for _ in range(times):
            self.n.clock.advance(SETTINGS.commit_interval_ms)
            self.loop.step()
            for _ in range(20):
                await asyncio.sleep(0)

    def gauge(self, name: str) -> float:
        return self.n.metric(name)


def world(settings: FailureNoticeSettings = SETTINGS) -> World:
    n = build(
        rest_failure_app("app-a"),
        rest_failure_app("dead", url=DEAD),
        settings=settings,
    )
    n.http.answers[DEAD] = "hang"
    consumer = LoopConsumer()
    loop = NotifierLoop(
        consumer,
        n.notifier,
        CODECS.dead_letter,
        n.clock,
        settings,
        n.events,
        sleep=ManualSleep(n.clock),
    )
    consumer.on_commit = loop.on_commit
    return World(n, consumer, loop)


def test_an_offset_is_committed_only_once_every_notice_before_it_is_finished() -> None:
    async def scenario() -> None:
        w = world()
        w.dead_letter("dead", 0)  # offset 0: its endpoint does not answer
        w.dead_letter("app-a", 1)  # offset 1: accepted at once
        w.consumer.append(0, None)  # the marker of the dispatcher's transaction
        await w.tick(3)
        assert len(w.n.http.to(HOOK)) == 1
        assert 0 not in w.consumer.committed(), "committed past an unfinished notice"
        assert w.loop.lag() >= 2
        w.n.http.release(DEAD)  # it times out: retried later, still unfinished
        await w.tick()
        assert 0 not in w.consumer.committed()
        w.n.http.answers[DEAD] = 200
        w.n.clock.advance(60_000)
        await w.tick(2)
        # both finished: committed past them, and past the marker
        assert w.consumer.committed()[0] == 3
        assert w.loop.lag() == 0
        await w.tick()
        assert w.gauge("scheduler_failure_notifier_lag_records") == 0
        assert w.gauge("scheduler_failure_notices_pending") == 0

    asyncio.run(scenario())


def test_commits_are_asynchronous_and_repeated_until_confirmed() -> None:
    async def scenario() -> None:
        w = world()
        w.consumer.on_commit = None  # the commit's answer never comes
        w.dead_letter("app-a")
        await w.tick(3)
        assert [c for c in w.consumer.commits if c[0].get(0) == 1]
        assert all(asynchronous for _, asynchronous in w.consumer.commits)
        repeated = len(w.consumer.commits)
        assert repeated >= 2, "an unconfirmed commit must be sent again"
        w.consumer.on_commit = w.loop.on_commit
        await w.tick(3)
        after = len(w.consumer.commits)
        await w.tick(3)
        assert len(w.consumer.commits) == after, "nothing new to commit once confirmed"

    asyncio.run(scenario())


def test_reading_pauses_above_the_memory_bound_and_resumes_below_it() -> None:
    async def scenario() -> None:
        w = world(SETTINGS.model_copy(update={"max_pending": 3, "per_app_concurrency": 8}))
        for k in range(4):
            w.dead_letter("dead", k)
        await w.tick()
        assert w.n.notifier.pending == 4
        await w.tick()
        assert w.consumer.paused == {0, 1}
        w.dead_letter("app-a", 9)
        await w.tick()
        assert w.n.http.to(HOOK) == [], "read while paused"
        w.n.http.answers[DEAD] = 200
        w.n.http.release(DEAD)
        w.n.clock.advance(60_000)
        await w.tick(3)
        assert w.consumer.paused == set()
        assert len(w.n.http.to(HOOK)) == 1

    asyncio.run(scenario())


def test_an_undecodable_dead_letter_is_skipped_and_passed() -> None:
    async def scenario() -> None:
        w = world()
        w.consumer.append(0, b"not avro")
        w.dead_letter("app-a", 1)
        await w.tick(2)
        assert w.n.skipped("undecodable") == 1 and len(w.n.http.to(HOOK)) == 1
        assert w.consumer.committed()[0] == 2

    asyncio.run(scenario())


def test_a_revoke_commits_what_is_finished_and_leaves_the_rest_to_the_next_owner() -> None:
    async def scenario() -> None:
        w = world()
        w.dead_letter("app-a", 0)
        w.dead_letter("dead", 1)
        w.dead_letter("app-a", 2)
        w.loop.step()
        for _ in range(20):
            await asyncio.sleep(0)
        before = len(w.consumer.commits)
        w.loop.on_revoke(None, [TopicPartition(TOPIC, 0)])
        [(offsets, asynchronous)] = w.consumer.commits[before:]
        assert offsets == {0: 1} and not asynchronous  # synchronous, up to the unfinished one
        for _ in range(20):
            await asyncio.sleep(0)
        assert w.n.http.hanging == 0 and w.n.notifier.pending == 0

    asyncio.run(scenario())


def test_the_stop_waits_for_notices_in_flight_within_its_budget_then_commits() -> None:
    async def scenario() -> None:
        w = world()
        w.dead_letter("app-a", 0)
        w.dead_letter("dead", 1)
        w.dead_letter("app-a", 2)
        w.loop.step()
        for _ in range(20):
            await asyncio.sleep(0)
        started = w.n.clock.monotonic_ms()
        stopping = asyncio.create_task(w.loop.run(lambda: True))
        await stopping
        waited = w.n.clock.monotonic_ms() - started
        assert SETTINGS.shutdown_timeout_ms <= waited <= SETTINGS.shutdown_timeout_ms + 20
        assert w.n.http.hanging == 0
        # the finished prefix is committed synchronously; the unfinished one is read again
        offsets, asynchronous = w.consumer.commits[-1]
        assert offsets[0] == 1 and not asynchronous
        # nothing starts once stopping
        w.n.clock.advance(60_000)
        assert w.n.notifier.start_due() == 0

    asyncio.run(scenario())


def test_the_stop_is_prompt_when_nothing_is_in_flight() -> None:
    async def scenario() -> None:
        w = world()
        w.dead_letter("app-a", 0)
        await w.tick()
        started = w.n.clock.monotonic_ms()
        await w.loop.run(lambda: True)
        assert w.n.clock.monotonic_ms() - started <= 1
        assert w.consumer.committed()[0] == 1

    asyncio.run(scenario())
