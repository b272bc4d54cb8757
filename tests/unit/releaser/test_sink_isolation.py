"""One tenant's destination cannot hold the transactional sink hostage (fake producer).

The real broker's refusals (too large, deleted topic) are in
tests/integration/releaser/test_sink_isolation.py; these drive the sink's decisions."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError, KafkaException

from scheduler_releaser.dispatcher.ports import OutRecord
from scheduler_releaser.dispatcher.refusals import TIMEOUT, Refusal
from scheduler_releaser.dispatcher.sink import REPORTS_STEP_S, FencedError, SinkStopped
from scheduler_releaser.dispatcher.timers import Position

from .test_sink_and_ring import FakeProducer, error, run, sink

pytestmark = pytest.mark.unit


def dest(topic: str, value: bytes) -> OutRecord:
    return OutRecord(topic, value, destination=True)


def test_a_refused_destination_record_leaves_the_transaction_and_the_rest_commits() -> None:
    p = FakeProducer()
    p.refuse["small.topic"] = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    s, tracker, clock, metrics = sink(p)
    for offset in (1, 2, 3):
        tracker.received("ring.1", 0, offset, now_ms=0)
    refusals: list[Refusal] = []
    committed: list[int] = []
    s.emit([OutRecord("results", b"rest-ok")], Position("ring.1", 0, 1), committed.append)
    s.emit(
        [dest("small.topic", b"big"), OutRecord("results", b"kafka-bad")],
        Position("ring.1", 0, 2),
        committed.append,
        on_refused=refusals.append,
    )
    s.emit(
        [dest("good.topic", b"fine"), OutRecord("results", b"kafka-ok")],
        Position("ring.1", 0, 3),
        committed.append,
    )

    async def steps() -> None:
        assert await s.flush() == 2  # max_batch 2: the third waits for the next transaction
        assert await s.flush() == 1
        [refusal] = refusals
        assert (refusal.code, refusal.permanent) == ("MSG_SIZE_TOO_LARGE", True)
        assert p.aborted == 1
        # Nothing of the refused emit was committed, and its ring offset (2) was not either:
        # the commit point stays at it until its own settlement commits.
        assert p.committed == [
            ([("results", b"rest-ok")], [("ring.1", 0, 2, "0")]),
            ([("good.topic", b"fine"), ("results", b"kafka-ok")], []),
        ]
        assert len(committed) == 2
        assert metrics.refusals.labels("MSG_SIZE_TOO_LARGE", "permanent")._value.get() == 1
        # The owner settles the refused attempt anew, same position: now 2 and 3 commit.
        s.emit([OutRecord("results", b"kafka-failed")], Position("ring.1", 0, 2))
        await s.flush()
        now = str(clock.now_ms())
        assert p.committed[-1] == ([("results", b"kafka-failed")], [("ring.1", 0, 4, now)])

    run(s, steps)


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(KafkaError.TOPIC_AUTHORIZATION_FAILED, True), (KafkaError.NOT_ENOUGH_REPLICAS, False)],
    ids=["denied", "too-few-replicas"],
)
def test_a_denied_or_under_replicated_destination_fails_alone(code: int, permanent: bool) -> None:
    p = FakeProducer()
    p.refuse["denied.topic"] = KafkaError(code)
    s, tracker, _, metrics = sink(p)
    for offset in (1, 2):
        tracker.received("ring.1", 0, offset, now_ms=0)
    refusals: list[Refusal] = []
    s.emit(
        [dest("denied.topic", b"x"), OutRecord("results", b"bad")],
        Position("ring.1", 0, 1),
        on_refused=refusals.append,
    )
    s.emit([dest("good.topic", b"fine"), OutRecord("results", b"ok")], Position("ring.1", 0, 2))

    async def steps() -> None:
        await s.flush()
        [refusal] = refusals
        assert (refusal.code, refusal.permanent) == (KafkaError(code).name(), permanent)
        assert p.committed == [([("good.topic", b"fine"), ("results", b"ok")], [])]
        kind = "permanent" if permanent else "transient"
        assert metrics.refusals.labels(refusal.code, kind)._value.get() == 1

    run(s, steps)


def test_a_destination_that_does_not_answer_is_refused_after_the_destination_timeout() -> None:
    p = FakeProducer()
    p.silent.add("slow.topic")
    s, _, clock, _ = sink(p, destination_timeout_ms=300)
    refusals: list[Refusal] = []
    s.emit([dest("slow.topic", b"x")], None, on_refused=refusals.append)
    s.emit([OutRecord("results", b"other-tenant")], None)
    started = clock.monotonic_ms()

    async def steps() -> None:
        await s.flush()

    run(s, steps)
    [refusal] = refusals
    assert (refusal.code, refusal.permanent) == (TIMEOUT, False)
    assert clock.monotonic_ms() - started == 300  # held the others back this long, no longer
    assert p.committed == [([("results", b"other-tenant")], [])]


def test_a_failure_of_the_schedulers_own_records_retries_the_whole_transaction() -> None:
    # Not a destination's fault: nothing is refused, the same records commit on a retry.
    p = FakeProducer()
    p.refuse["results"] = KafkaError(KafkaError.NOT_ENOUGH_REPLICAS)
    s, _, _, _ = sink(p)
    refusals: list[Refusal] = []
    s.emit([dest("good.topic", b"x"), OutRecord("results", b"r")], None, on_refused=refusals.append)

    async def steps() -> None:
        task = asyncio.ensure_future(s.flush())
        while p.aborted < 3:  # retried with backoff while the results topic fails
            await asyncio.sleep(0.001)
        p.refuse.clear()
        await task

    run(s, steps)
    assert refusals == []
    assert p.committed == [([("good.topic", b"x"), ("results", b"r")], [])]


def test_a_failing_transaction_is_not_retried_once_the_sink_is_closing() -> None:
    # SIGTERM while the scheduler's own topic fails: the stop must not wait for it forever.
    p = FakeProducer()
    p.refuse["results"] = KafkaError(KafkaError.NOT_ENOUGH_REPLICAS)
    s, _, _, _ = sink(p)
    s.emit([OutRecord("results", b"r")], Position("ring.1", 0, 1))
    s.close()

    async def steps() -> None:
        with pytest.raises(SinkStopped):
            await s.flush()

    run(s, steps)
    assert p.committed == [] and s.pending == 1  # left unsettled: read again after restart


def test_an_abortable_commit_error_with_no_refusal_still_retries_whole() -> None:
    p = FakeProducer()
    s, _, _, _ = sink(p)
    s.emit([dest("good.topic", b"x")], None, on_refused=lambda r: pytest.fail(str(r)))

    async def steps() -> None:
        p.fail = [error(abort=True)]
        await s.flush()

    run(s, steps)
    assert p.aborted == 1 and p.committed == [([("good.topic", b"x")], [])]


def test_a_failure_naming_no_record_is_pinned_on_the_destination_that_fails_alone() -> None:
    # A topic deleted since the producer last saw it fails AddPartitionsToTxn: the whole
    # transaction aborts and no record's report names it. The destination emits are tried alone.
    # (Each such failure costs the producer: librdkafka is not trusted after it.)
    gone = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "add partitions", txn_requires_abort=True)
    first, p, third = FakeProducer(), FakeProducer(), FakeProducer()
    s, tracker, _, _ = sink(first, p, third)
    for offset in (1, 2):
        tracker.received("ring.1", 0, offset, now_ms=0)
    refusals: list[Refusal] = []
    s.emit([OutRecord("results", b"rest")], Position("ring.1", 0, 1))
    s.emit(
        [dest("gone.topic", b"x"), OutRecord("results", b"k")],
        Position("ring.1", 0, 2),
        on_refused=refusals.append,
    )

    async def steps() -> None:
        first.fail = [gone]
        assert await s.flush() == 1  # the other tenant's emit, without the suspect
        assert first.committed == [] and first.aborted == 1
        assert p.committed == [([("results", b"rest")], [("ring.1", 0, 2, "0")])]
        assert s.pending == 1
        p.fail = [gone]
        await s.flush()  # the suspect alone fails again: refused
        [refusal] = refusals
        assert (refusal.code, refusal.permanent, refusal.topic_gone) == (
            "UNKNOWN_TOPIC_OR_PART",
            True,
            True,
        )
        assert s.pending == 0

    run(s, steps)


def answer_nothing(producer: FakeProducer, timeout: float) -> int:
    """A flush that waits its whole timeout in vain: no delivery report arrives."""
    if producer.clock is not None:
        producer.clock.advance(int(timeout * 1000))
    return len(producer._reports)


class BrokenByAbort(FakeProducer):
    """What librdkafka did once AddPartitionsToTxn failed for a deleted topic: no delivery
    report arrives, and the abort fails fatally (INVALID_TXN_STATE)."""

    def flush(self, timeout: float = -1) -> int:
        return answer_nothing(self, timeout)

    def abort_transaction(self, timeout: float = -1) -> None:
        super().abort_transaction(timeout)
        raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "end txn", fatal=True))


def test_a_stalled_transaction_is_aborted_and_redone_whole_on_a_new_producer() -> None:
    # Nothing acknowledged, the scheduler's records neither (a broker restarting looks the same
    # as a transaction stalled by a deleted topic): nobody is blamed, the producer whose abort
    # failed is replaced, and the same records commit on the new one.
    broken, fresh = BrokenByAbort(), FakeProducer()
    s, _, _, _ = sink(broken, fresh, destination_timeout_ms=200)
    refusals: list[Refusal] = []
    s.emit([OutRecord("results", b"rest")], None)
    s.emit([dest("good.topic", b"x"), OutRecord("results", b"k")], None, on_refused=refusals.append)

    async def steps() -> None:
        await s.flush()

    run(s, steps)
    assert refusals == [] and broken.committed == []
    assert fresh.committed == [
        ([("results", b"rest"), ("good.topic", b"x"), ("results", b"k")], [])
    ]


class DeafAfterTopicError(FakeProducer):
    """The other thing librdkafka did once AddPartitionsToTxn failed for a deleted topic
    (seen 1 run in 5 on the real broker): the abort succeeds, and no record produced after
    it is ever acknowledged, the scheduler's own ones neither."""

    def __init__(self) -> None:
        super().__init__()
        self.deaf = False

    def flush(self, timeout: float = -1) -> int:
        if not self.deaf:
            return super().flush(timeout)
        return answer_nothing(self, timeout)

    def abort_transaction(self, timeout: float = -1) -> None:
        super().abort_transaction(timeout)
        self.deaf = True


def test_a_producer_failed_by_a_topic_is_replaced_even_when_its_abort_worked() -> None:
    # Before: the abort "worked", the rest was produced again on the same producer, went
    # unacknowledged for the destination timeout, was retried whole and so on, forever: the other
    # tenants' results were never committed (the integration test's REST messages stayed QUEUED).
    gone = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "add partitions", txn_requires_abort=True)
    deaf, fresh, third = DeafAfterTopicError(), FakeProducer(), FakeProducer()
    s, _, clock, _ = sink(deaf, fresh, third, destination_timeout_ms=200)
    deaf.clock = clock
    refusals: list[Refusal] = []
    s.emit([OutRecord("results", b"rest")], None)
    s.emit([dest("gone.topic", b"x"), OutRecord("results", b"k")], None, on_refused=refusals.append)

    async def steps() -> None:
        deaf.fail = [gone]
        started = clock.monotonic_ms()
        assert await s.flush() == 1  # the other tenant's emit, on the replacement producer
        assert clock.monotonic_ms() - started < 200, "waited for the deaf producer"
        assert fresh.committed == [([("results", b"rest")], [])]
        fresh.fail = [gone]
        await s.flush()  # the suspect alone: refused by name
        assert [r.code for r in refusals] == ["UNKNOWN_TOPIC_OR_PART"]

    run(s, steps)
    assert deaf.committed == []


class StalledByGoneTopic(FakeProducer):
    """Another way librdkafka met a topic deleted since it was produced to (seen 1 run in 20
    on the real broker): while its record is in the transaction nothing is acknowledged, not
    even the scheduler's own records, and the abort succeeds."""

    def flush(self, timeout: float = -1) -> int:
        if not any(topic == "gone.topic" for topic, _ in self._reports):
            return super().flush(timeout)
        return answer_nothing(self, timeout)


def test_a_transaction_stalled_by_a_deleted_topic_is_redone_on_a_producer_that_names_it() -> None:
    # Before: the stalled transaction was aborted (successfully) and redone whole on the same
    # producer, which stalled again, forever: no tenant's result was committed.
    stalled, fresh = StalledByGoneTopic(), FakeProducer()
    fresh.refuse["gone.topic"] = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    s, _, clock, _ = sink(stalled, fresh, destination_timeout_ms=200)
    stalled.clock = clock
    refusals: list[Refusal] = []
    s.emit([OutRecord("results", b"rest")], None)
    s.emit([dest("gone.topic", b"x"), OutRecord("results", b"k")], None, on_refused=refusals.append)

    async def steps() -> None:
        assert await s.flush() == 2

    run(s, steps)
    assert stalled.committed == [] and stalled.aborted == 1
    assert [(r.code, r.permanent) for r in refusals] == [("UNKNOWN_TOPIC_OR_PART", True)]
    assert fresh.committed == [([("results", b"rest")], [])]


@pytest.mark.parametrize(
    "code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.NOT_ENOUGH_REPLICAS]
)
def test_a_transaction_failed_by_a_denied_or_moving_topic_keeps_its_producer(code: int) -> None:
    # Replacing a producer holds every tenant's commits for a moment: only a deleted topic (or a
    # stall) is worth it. A replacement here would find no second producer and fail the test.
    only = FakeProducer()
    s, _, _, _ = sink(only)
    s.emit([OutRecord("results", b"rest")], None)
    s.emit(
        [dest("denied.topic", b"x"), OutRecord("results", b"k")], None, on_refused=lambda _: None
    )

    async def steps() -> None:
        only.fail = [KafkaError(code, "add partitions", txn_requires_abort=True)]
        assert await s.flush() == 1

    run(s, steps)
    assert only.committed == [([("results", b"rest")], [])] and only.aborted == 1


def test_a_fence_in_a_delivery_report_stands_the_sink_down_at_once() -> None:
    """Fenced by a new owner, librdkafka fails the records in flight with _FENCED and may never
    report the rest: the sink must stand down then, not wait out the destination timeout (a
    fenced instance went on looking ready for 8 s in the rolling-update test)."""
    p = FakeProducer()
    p.refuse["results"] = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    p.silent.add("slow.topic")
    s, _, clock, _ = sink(p, destination_timeout_ms=5_000)
    s.emit([dest("slow.topic", b"x"), OutRecord("results", b"r")], None)
    started = clock.monotonic_ms()

    async def steps() -> None:
        with pytest.raises(FencedError):
            await s.flush()

    run(s, steps)
    assert clock.monotonic_ms() - started <= REPORTS_STEP_S * 1000  # one wait for reports
    assert p.committed == []
