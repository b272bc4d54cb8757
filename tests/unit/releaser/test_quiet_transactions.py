"""The sink's quiet runs: a transaction is first produced without delivery reports (each report
costs the worker thread the GIL), and only a quiet run that failed is redone precisely, reading
every report. Whatever happens to its records, a quiet-first sink must end exactly as a sink
that always reads the reports: same records committed, same refusals, same offsets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError

from scheduler_releaser.dispatcher.ports import OutRecord
from scheduler_releaser.dispatcher.refusals import TIMEOUT, Refusal
from scheduler_releaser.dispatcher.sink import PRECISE_FOR_MS, QUIET_WAIT_MS
from scheduler_releaser.dispatcher.timers import Position

from .test_sink_and_ring import FakeProducer, run, sink
from .test_sink_isolation import StalledByGoneTopic

pytestmark = pytest.mark.unit


def dest(topic: str, value: bytes) -> OutRecord:
    return OutRecord(topic, value, destination=True)


@dataclass
class Outcome:
    committed: list[tuple[list[tuple[str, bytes]], list]] = field(default_factory=list)
    refusals: list[tuple[str, bool]] = field(default_factory=list)
    left: int = 0


def play(producers: list[FakeProducer], quiet: bool, destination_timeout_ms: int) -> Outcome:
    """Three tenants' emits, the second to 'bad.topic', flushed until nothing is left."""
    s, tracker, _, _ = sink(
        *producers, quiet=quiet, destination_timeout_ms=destination_timeout_ms, max_batch=10
    )
    for offset in (1, 2, 3):
        tracker.received("ring.1", 0, offset, now_ms=0)
    refusals: list[Refusal] = []
    s.emit([OutRecord("results", b"rest")], Position("ring.1", 0, 1))
    s.emit(
        [dest("bad.topic", b"x"), OutRecord("results", b"bad")],
        Position("ring.1", 0, 2),
        on_refused=refusals.append,
    )
    s.emit(
        [dest("good.topic", b"y"), OutRecord("results", b"good")],
        Position("ring.1", 0, 3),
        on_refused=refusals.append,
    )

    async def steps() -> None:
        while s.pending:
            await s.flush()

    run(s, steps)
    return Outcome(
        [c for p in producers for c in p.committed],
        [(r.code, r.permanent) for r in refusals],
        s.pending,
    )


def refusing(code: int) -> Callable[[], list[FakeProducer]]:
    def producers() -> list[FakeProducer]:
        p = FakeProducer()
        p.refuse["bad.topic"] = KafkaError(code)
        return [p]

    return producers


def silent() -> list[FakeProducer]:
    p = FakeProducer()
    p.silent.add("bad.topic")
    return [p]


def stalled_by_a_deleted_topic() -> list[FakeProducer]:
    stalled = StalledByGoneTopic()
    stalled.gone = "bad.topic"
    fresh = [FakeProducer() for _ in range(3)]  # replacements: they name the deleted topic
    for p in fresh:
        p.refuse["bad.topic"] = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    return [stalled, *fresh]


@pytest.mark.parametrize(
    "producers",
    [
        refusing(KafkaError.MSG_SIZE_TOO_LARGE),
        refusing(KafkaError.TOPIC_AUTHORIZATION_FAILED),
        refusing(KafkaError.NOT_ENOUGH_REPLICAS),
        silent,
        stalled_by_a_deleted_topic,
    ],
    ids=["too-large", "denied", "too-few-replicas", "silent", "stalled-by-a-deleted-topic"],
)
def test_a_quiet_first_sink_ends_as_a_sink_that_reads_every_report(
    producers: Callable[[], list[FakeProducer]],
) -> None:
    precise = play(producers(), quiet=False, destination_timeout_ms=300)
    quiet = play(producers(), quiet=True, destination_timeout_ms=300)
    assert quiet == precise
    # and the outcome is the isolation one: the bad tenant alone is refused, the rest commits
    assert len(precise.refusals) == 1 and precise.left == 0
    committed = [r for records, _ in precise.committed for r in records]
    assert ("results", b"rest") in committed and ("good.topic", b"y") in committed
    assert ("bad.topic", b"x") not in committed


def test_a_transaction_that_goes_well_reads_no_delivery_report() -> None:
    p = FakeProducer()
    s, tracker, clock, _ = sink(p)
    tracker.received("ring.1", 0, 1, now_ms=0)
    s.emit([dest("good.topic", b"x"), OutRecord("results", b"r")], Position("ring.1", 0, 1))

    async def steps() -> None:
        await s.flush()

    run(s, steps)
    assert p.reported == 0 and p.aborted == 0
    assert p.committed == [
        ([("good.topic", b"x"), ("results", b"r")], [("ring.1", 0, 2, str(clock.now_ms()))])
    ]


def test_after_a_failed_quiet_run_the_sink_reads_reports_for_a_while_then_goes_quiet() -> None:
    p = FakeProducer()
    p.refuse["bad.topic"] = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    s, _, clock, _ = sink(p, max_batch=10)
    refusals: list[Refusal] = []

    async def steps() -> None:
        s.emit([dest("bad.topic", b"x")], None, on_refused=refusals.append)
        await s.flush()
        assert len(refusals) == 1 and p.aborted == 2  # the quiet run, then the precise one
        reported = p.reported
        assert reported == 1

        clock.advance(PRECISE_FOR_MS - 1)
        s.emit([dest("good.topic", b"y")], None)
        await s.flush()  # still precise: its report is read
        assert p.reported == reported + 1

        clock.advance(1)
        s.emit([dest("good.topic", b"z")], None)
        await s.flush()  # quiet again
        assert p.reported == reported + 1 and p.aborted == 2

    run(s, steps)
    assert [records for records, _ in p.committed] == [
        [("good.topic", b"y")],
        [("good.topic", b"z")],
    ]


def test_a_silent_destination_holds_the_others_for_the_quiet_wait_once_then_the_timeout() -> None:
    timeout_ms = 3 * QUIET_WAIT_MS
    p = FakeProducer()
    p.silent.add("slow.topic")
    s, _, clock, _ = sink(p, destination_timeout_ms=timeout_ms)
    refusals: list[Refusal] = []

    async def one_round() -> int:
        s.emit([dest("slow.topic", b"x")], None, on_refused=refusals.append)
        s.emit([OutRecord("results", b"other-tenant")], None)
        started = clock.monotonic_ms()
        while s.pending:
            await s.flush()
        return clock.monotonic_ms() - started

    async def steps() -> None:
        assert await one_round() == QUIET_WAIT_MS + timeout_ms
        assert await one_round() == timeout_ms  # within PRECISE_FOR_MS: no quiet run

    run(s, steps)
    assert [(r.code, r.permanent) for r in refusals] == [(TIMEOUT, False)] * 2
    assert [records for records, _ in p.committed] == [[("results", b"other-tenant")]] * 2
