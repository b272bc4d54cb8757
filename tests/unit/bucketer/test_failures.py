"""Transient failures raise out of the batch (nothing may be committed); a retry completes it."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from scheduler.kafka.producer import ProduceError
from scheduler.records import DueMessage
from scheduler.testing.fakes import InMemoryBucketStore

from .harness import Harness

pytestmark = pytest.mark.unit


class FlakyBuckets(InMemoryBucketStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def store(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("Cassandra unavailable (simulated)")
        super().store(bucket_ms, shard, message)


def test_a_failed_store_fails_the_batch_and_the_retry_stores_everything() -> None:
    h = Harness(buckets=FlakyBuckets(failures=1))
    now = h.clock.now_ms()
    records = [h.record(h.request(now + 60_000 + i)) for i in range(3)]
    records.append(h.record(h.request(now + 100)))
    with pytest.raises(ConnectionError):
        h.process(*records)
    assert h.producer.records == []  # nothing produced before the writes were durable

    h.process(*records)
    assert len(h.stored()) == 3
    assert len(h.direct()) == 1


def test_a_failed_flush_fails_the_batch() -> None:
    h = Harness()
    request = h.request(h.clock.now_ms() + 100)
    h.producer.fail_next_flush = 1
    with pytest.raises(ProduceError):
        h.process(h.record(request))
    h.process(h.record(request))
    [(_, due)] = h.direct()
    assert due.message_id == request.message_id
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is Status.QUEUED


def test_a_flush_that_failed_after_delivering_part_is_retried_whole_duplicating_that_part() -> None:
    h = Harness()
    now = h.clock.now_ms()
    requests = [h.request(now + 100 + i) for i in range(3)]
    records = [h.record(r) for r in requests]
    h.producer.fail_next_flush = 1
    h.producer.delivered_on_failure = 1  # the first ring record was acknowledged all the same
    with pytest.raises(ProduceError):
        h.process(*records)
    assert [due.message_id for _, due in h.direct()] == [requests[0].message_id]

    h.process(*records)  # the retry of the uncommitted batch
    delivered = sorted(due.message_id for _, due in h.direct())
    ids = [r.message_id for r in requests]
    assert delivered == sorted([ids[0], *ids])  # none lost; the delivered part twice
    for message_id in ids:
        view = h.messages.get("app-a", message_id)
        assert view is not None and view.state.status is Status.QUEUED
