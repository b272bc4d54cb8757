"""`init_transactions` without librdkafka's half-second wait for a coordinator.

librdkafka looks for the transaction coordinator as soon as `init_transactions` is called. When
the new producer has no broker connection up yet, the lookup is put off to its coordinator
timer, which fires every 500 ms; the connection coming up does not bring it forward. Measured on
the development broker (confluent-kafka 2.16): one producer at a time took 55 ms, but of 11
started at once (the dispatcher fences up to 20 transactional ids at start, in parallel) some
took 506 ms. A metadata request first (of the whole cluster; asking about one topic did not
help: 0.52 s in each of 4 rounds) made all 11 ready in 69-85 ms (bench/txn_init_bench.py). A
dispatcher's start after a crash, and a releaser's takeover, are time in which nothing due is
delivered; the request is made once per producer, at its start.
"""

from __future__ import annotations

import time
from typing import Protocol


class TransactionalClient(Protocol):
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object: ...

    def init_transactions(self, timeout: float = -1) -> None: ...


def init_transactions(producer: TransactionalClient, timeout_s: float) -> None:
    """`producer.init_transactions(timeout_s)`, after a metadata request; both within
    `timeout_s`. Raises what either call raises (KafkaException)."""
    deadline = time.monotonic() + timeout_s
    producer.list_topics(timeout=timeout_s)
    producer.init_transactions(max(0.001, deadline - time.monotonic()))
