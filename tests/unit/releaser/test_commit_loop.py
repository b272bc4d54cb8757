"""The dispatcher's committer task (runtime._commit_loop) on a TransactionalSink with a fake
producer: transactions back to back while anything is emitted, at most one started every
txn_interval_ms, an idle wake for the offsets, and an end on stop + wake()."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from scheduler.clock import Clock, ManualClock
from scheduler_releaser.dispatcher.ports import OutRecord
from scheduler_releaser.dispatcher.runtime import TransactionWatch, _commit_loop
from scheduler_releaser.dispatcher.sink import TransactionalSink
from scheduler_releaser.dispatcher.timers import Position
from scheduler_releaser.settings import DispatchSettings

from .test_sink_and_ring import FakeProducer, sink

pytestmark = pytest.mark.unit


async def until(check: Callable[[], object], timeout_s: float = 2.0) -> None:
    """Poll `check` on the event loop (every ms) until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, f"not within {timeout_s} s"
        await asyncio.sleep(0.001)


def committer(
    s: TransactionalSink, clock: Clock, settings: DispatchSettings, stop: asyncio.Event
) -> asyncio.Task[None]:
    return asyncio.create_task(
        _commit_loop(s, clock, settings, stop, TransactionWatch(settings.txn_stuck_ms))
    )


def watch_waits(s: TransactionalSink) -> list[bool]:
    """[True] while the committer is inside wait_for_emits."""
    inside = [False]
    wait = s.wait_for_emits

    async def wait_for_emits(timeout_s: float) -> None:
        inside[0] = True
        try:
            await wait(timeout_s)
        finally:
            inside[0] = False

    s.wait_for_emits = wait_for_emits  # type: ignore[method-assign]
    return inside


def test_an_emit_is_committed_at_once_not_at_the_idle_wake_and_wake_ends_the_loop() -> None:
    # idle wake every 10 s: anything committed sooner was woken by its emit
    settings = DispatchSettings(txn_interval_ms=1, txn_offsets_interval_ms=10_000)
    p = FakeProducer()
    s, _, clock, _ = sink(p)

    async def main() -> None:
        await s.start()
        stop = asyncio.Event()
        inside = watch_waits(s)
        task = committer(s, clock, settings, stop)
        await until(lambda: inside[0])  # idle: nothing emitted, nothing committed
        assert p.committed == []
        s.emit([OutRecord("dest", b"1")], None)
        await until(lambda: len(p.committed) == 1)
        await until(lambda: inside[0])
        s.emit([OutRecord("dest", b"2")], None)
        await until(lambda: len(p.committed) == 2)
        await until(lambda: inside[0])
        stop.set()
        s.wake()  # shutdown: the idle wait ends now, not in 10 s
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert p.committed == [([("dest", b"1")], []), ([("dest", b"2")], [])]


def test_when_idle_the_committer_still_wakes_for_the_offsets() -> None:
    """Offsets ride along at most every 50 ms; the last ones, left behind by a transaction with
    records, are committed alone by the idle wake (txn_offsets_interval_ms) without an emit."""
    settings = DispatchSettings(txn_interval_ms=1, txn_offsets_interval_ms=50)
    p = FakeProducer()
    s, tracker, clock, _ = sink(p, offsets_interval_ms=50)
    tracker.received("ring.1", 0, 0, now_ms=0)
    tracker.received("ring.1", 0, 1, now_ms=0)

    async def main() -> None:
        await s.start()
        stop = asyncio.Event()
        task = committer(s, clock, settings, stop)
        s.emit([OutRecord("dest", b"0")], Position("ring.1", 0, 0))
        await until(lambda: len(p.committed) == 1)
        clock.advance(10)  # within the offsets interval of the sink's clock
        s.emit([OutRecord("dest", b"1")], Position("ring.1", 0, 1))
        await until(lambda: len(p.committed) == 3)  # no further emit
        stop.set()
        s.wake()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert p.committed[0] == ([("dest", b"0")], [("ring.1", 0, 1, "0")])
    assert p.committed[1] == ([("dest", b"1")], [])
    assert p.committed[2] == ([], [("ring.1", 0, 2, str(clock.now_ms()))])


class SteppedTime:
    """The manual clock, moved only by the test; the committer's spacing sleeps on it."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sleeping_until: float | None = None
        self._moved = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping_until = self.clock.monotonic_ms() + round(seconds * 1000, 3)
        try:
            while self.clock.monotonic_ms() < self.sleeping_until:
                self._moved.clear()
                await self._moved.wait()
        finally:
            self.sleeping_until = None

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self._moved.set()


def test_transactions_run_back_to_back_at_most_one_started_per_interval() -> None:
    """A record emitted every 2 ms for 250 ms of a manual clock, txn_interval_ms 20, idle wake
    10 s, at most 2 emits per transaction (the helper's max_batch). The committer starts one
    transaction exactly every 20 ms, each with the oldest emits: 13 in 250 ms. A committer that
    waited for its idle wake would have made 1; one without spacing, one per emit."""
    settings = DispatchSettings(txn_interval_ms=20, txn_offsets_interval_ms=10_000)
    p = FakeProducer()
    s, _, clock, _ = sink(p)
    time = SteppedTime(clock)
    starts: list[float] = []
    flush = s.flush

    async def timed_flush() -> int:
        starts.append(clock.monotonic_ms())
        return await flush()

    s.flush = timed_flush  # type: ignore[method-assign]
    inside_wait = watch_waits(s)

    def parked() -> bool:
        """The committer can go on only once the clock moves (or, idle, on an emit)."""
        if time.sleeping_until is not None:
            return clock.monotonic_ms() < time.sleeping_until
        return inside_wait[0] and not s.pending

    emitted: list[bytes] = []
    by_committer: list[list[bytes]] = []

    async def main() -> None:
        await s.start()
        stop = asyncio.Event()
        task = asyncio.create_task(
            _commit_loop(
                s, clock, settings, stop, TransactionWatch(settings.txn_stuck_ms), time.sleep
            )
        )
        for _ in range(0, 250, 2):
            value = str(len(emitted)).encode()
            emitted.append(value)
            s.emit([OutRecord("dest", value)], None)
            await until(parked)
            time.advance(2)
        stop.set()
        s.wake()
        time.advance(1_000)  # ends the spacing sleep, however long: the loop sees stop
        await asyncio.wait_for(task, 2)
        by_committer.extend([v for _, v in records] for records, _ in p.committed)
        while s.pending:  # the rest, by hand
            await flush()

    asyncio.run(main())
    assert starts == list(range(0, 250, 20)), starts
    expected = [[b"0"]] + [[str(i).encode(), str(i + 1).encode()] for i in range(1, 25, 2)]
    assert by_committer == expected, by_committer
    assert [v for records, _ in p.committed for _, v in records] == emitted  # all, in order


async def idle(s: TransactionalSink, time: SteppedTime) -> None:
    """Past the spacing after the last transaction: the committer waits for an emit."""
    await until(lambda: time.sleeping_until is not None)
    time.advance(5)
    await until(lambda: time.sleeping_until is None and not s.pending)


def company_world(
    max_batch: int = 100,
) -> tuple[TransactionalSink, FakeProducer, ManualClock, SteppedTime, DispatchSettings]:
    settings = DispatchSettings(
        txn_interval_ms=5, txn_results_interval_ms=50, txn_offsets_interval_ms=10_000
    )
    p = FakeProducer()
    s, _, clock, _ = sink(p, max_batch=max_batch)
    return s, p, clock, SteppedTime(clock), settings


def test_results_without_a_kafka_delivery_wait_for_company_up_to_the_results_interval() -> None:
    """Results of REST deliveries (no destination record): emitted at 0 and 20 ms of a manual
    clock, they share one transaction at 50 ms (txn_results_interval_ms), not one each at once
    (every transaction costs the brokers a marker per partition it wrote)."""
    s, p, clock, time, settings = company_world()

    async def main() -> None:
        await s.start()
        stop = asyncio.Event()
        task = asyncio.create_task(
            _commit_loop(s, clock, settings, stop, TransactionWatch(60_000), time.sleep)
        )
        await idle(s, time)  # at 5 ms, after the first (empty) flush at 0
        s.emit([OutRecord("results", b"a")], None)
        await until(lambda: time.sleeping_until == 50)  # 50 ms after that flush began
        time.advance(20)
        s.emit([OutRecord("results", b"b")], None)
        time.advance(24)  # 49 ms: still waiting
        await until(lambda: time.sleeping_until == 50)
        assert p.committed == []
        time.advance(1)
        await until(lambda: len(p.committed) == 1)
        stop.set()
        s.wake()
        time.advance(1_000)
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert p.committed == [([("results", b"a"), ("results", b"b")], [])]


def test_a_kafka_delivery_or_a_full_transaction_ends_the_wait_for_company() -> None:
    """A result waiting for company is committed as soon as a Kafka delivery is emitted (it is
    visible only once committed: its lateness runs until then), or once a transaction's worth
    of emits is pending; and a stop ends the wait at once."""
    s, p, clock, time, settings = company_world(max_batch=3)

    async def main() -> None:
        await s.start()
        stop = asyncio.Event()
        task = asyncio.create_task(
            _commit_loop(s, clock, settings, stop, TransactionWatch(60_000), time.sleep)
        )
        await idle(s, time)
        s.emit([OutRecord("results", b"a")], None)
        await until(lambda: time.sleeping_until == 50)
        time.advance(10)
        s.emit([OutRecord("dest", b"k")], None, not_before_ms=clock.now_ms())
        await until(lambda: len(p.committed) == 1)  # at 15 ms, not 50
        assert clock.monotonic_ms() == 15
        await idle(s, time)
        for value in (b"x", b"y", b"z"):
            s.emit([OutRecord("results", value)], None)
        await until(lambda: len(p.committed) == 2)  # three: a full transaction, at once
        assert clock.monotonic_ms() == 20
        await idle(s, time)
        s.emit([OutRecord("results", b"last")], None)
        await until(lambda: time.sleeping_until is not None)
        stop.set()
        s.wake()  # shutdown: the wait for company ends now
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert [[v for _, v in records] for records, _ in p.committed] == [
        [b"a", b"k"],
        [b"x", b"y", b"z"],
    ]
