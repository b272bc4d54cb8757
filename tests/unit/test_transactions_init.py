"""scheduler.kafka.transactions: a producer's connection is opened (a metadata request) before
`init_transactions`, within one timeout. Why, with the measurement:
bench/txn_init_bench.py and the module's docstring."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from scheduler.kafka.transactions import init_transactions

pytestmark = pytest.mark.unit


class RecordingProducer:
    def __init__(self, refuse_metadata: bool = False) -> None:
        self.calls: list[tuple[str, object, float]] = []
        self._refuse_metadata = refuse_metadata

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        self.calls.append(("list_topics", topic, timeout))
        if self._refuse_metadata:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return object()

    def init_transactions(self, timeout: float = -1) -> None:
        self.calls.append(("init_transactions", None, timeout))


def test_metadata_is_asked_for_before_init_transactions_within_the_same_timeout() -> None:
    producer = RecordingProducer()
    init_transactions(producer, 30.0)
    assert [(name, topic) for name, topic, _ in producer.calls] == [
        ("list_topics", None),
        ("init_transactions", None),
    ]
    assert producer.calls[0][2] == 30.0
    assert 0 < producer.calls[1][2] <= 30.0


def test_a_broker_that_cannot_be_reached_fails_the_init_as_before() -> None:
    producer = RecordingProducer(refuse_metadata=True)
    with pytest.raises(KafkaException):
        init_transactions(producer, 1.0)
    assert [name for name, _, _ in producer.calls] == ["list_topics"]
