"""The releaser's transactional ring publisher against a fake producer: one transaction per
flush, fencing stands it down, an abortable failure aborts and keeps the producer."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from scheduler.records import DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.releaser.runtime import KafkaRingPublisher, ReleaserFenced

pytestmark = pytest.mark.unit
KAFKA = KafkaSettings(topic_prefix="t.")
SCHEDULING = SchedulingSettings()


class FakeProducer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.commit_error: KafkaError | None = None

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        return object()  # the metadata asked before init (scheduler.kafka.transactions)

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, **_: Any) -> None:
        self.calls.append(f"produce {topic}")

    def commit_transaction(self, timeout: float) -> None:
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def flush(self, timeout: float) -> int:
        return 0


def message(n: int) -> DueMessage:
    return DueMessage(
        message_id=f"M{n}",
        app_id="app",
        generation=0,
        attempt=1,
        due_ms=1_767_225_600_000,
        send_at_ms=1_767_225_600_000,
        created_ms=0,
        payload_json="{}",
    )


def started() -> tuple[KafkaRingPublisher, list[FakeProducer]]:
    made: list[FakeProducer] = []

    def make() -> Producer:
        made.append(FakeProducer())
        return made[-1]  # type: ignore[return-value]

    publisher = KafkaRingPublisher(make, Topics(KAFKA, SCHEDULING), Codecs.build(KAFKA))
    publisher.start()
    return publisher, made


def test_each_flush_commits_one_transaction() -> None:
    publisher, made = started()
    publisher.flush()  # nothing open: nothing to commit
    publisher.publish(message(1), 1_767_225_600_000)
    publisher.publish(message(2), 1_767_225_600_000)
    publisher.flush()
    calls = made[0].calls
    assert calls[0] == "init" and calls[1] == "begin" and calls[-1] == "commit"
    assert len([c for c in calls if c.startswith("produce")]) == 2


def test_a_fenced_commit_stands_the_publisher_down_until_started_again() -> None:
    publisher, made = started()
    made[0].commit_error = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    publisher.publish(message(1), 0)
    with pytest.raises(ReleaserFenced):
        publisher.flush()
    assert not publisher.started
    with pytest.raises(ReleaserFenced):
        publisher.publish(message(2), 0)  # nothing goes out on the fenced producer
    publisher.start()  # a new assignment of the lease
    assert len(made) == 2 and made[1].calls == ["init"]


def test_an_abortable_commit_failure_aborts_and_keeps_the_producer() -> None:
    publisher, made = started()
    made[0].commit_error = KafkaError(
        KafkaError.MSG_SIZE_TOO_LARGE, "too large", txn_requires_abort=True
    )
    publisher.publish(message(1), 0)
    with pytest.raises(KafkaException):
        publisher.flush()
    assert made[0].calls[-1] == "abort"
    assert publisher.started
    made[0].commit_error = None
    aborted_at = len(made[0].calls)
    publisher.publish(message(1), 0)  # the next tick releases the chunk again
    publisher.flush()
    after = made[0].calls[aborted_at:]
    assert after[0] == "begin" and after[-1] == "commit" and len(after) == 3


def test_a_failed_tick_aborts_the_transaction_it_left_open() -> None:
    publisher, made = started()
    publisher.publish(message(1), 0)
    publisher.abort()
    assert made[0].calls[-1] == "abort"
    publisher.abort()  # nothing open any more
    assert made[0].calls.count("abort") == 1
