"""The dispatcher's committer task (runtime._commit_loop) on a TransactionalSink with a fake
producer: transactions back to back while anything is emitted, at most one started every
txn_interval_ms, an idle wake for the offsets, and an end on stop + wake()."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from scheduler.clock import Clock, ManualClock, SystemClock
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


def test_transactions_run_back_to_back_at_most_one_started_per_interval() -> None:
    """Emits every ~2 ms for 0.25 s (wall clock), txn_interval_ms 20, idle wake 10 s: every
    transaction starts at least 20 ms after the previous one, and they keep coming (a committer
    that waited for its idle wake would have made at most one)."""
    settings = DispatchSettings(txn_interval_ms=20, txn_offsets_interval_ms=10_000)
    clock = SystemClock()
    p = FakeProducer()
    s, _, _, _ = sink(p, clock=ManualClock())
    starts: list[float] = []
    flush = s.flush

    async def timed_flush() -> int:
        starts.append(clock.monotonic_ms())
        return await flush()

    s.flush = timed_flush  # type: ignore[method-assign]
    emitted: list[bytes] = []

    async def main() -> None:
        await s.start()
        stop = asyncio.Event()
        task = committer(s, clock, settings, stop)
        end = clock.monotonic_ms() + 250
        while clock.monotonic_ms() < end:
            value = str(len(emitted)).encode()
            emitted.append(value)
            s.emit([OutRecord("dest", value)], None)
            await asyncio.sleep(0.002)
        stop.set()
        s.wake()
        await asyncio.wait_for(task, 2)
        while s.pending:  # at most 2 emits per transaction (the helper's max_batch)
            await flush()

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 20 - 1, gaps  # 1 ms for the instructions between start and flush
    with_records = [records for records, _ in p.committed if records]
    assert len(with_records) >= 4, len(with_records)  # ~12 at 20 ms; 10 s idle: 1
    assert [v for records in with_records for _, v in records] == emitted  # all, in order
