"""BatchExecutor: statements grouped by replica, cut by count and bytes, big ones alone; the
expected warnings of its batches dropped from the logs."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from cassandra.query import BatchStatement, SimpleStatement

from scheduler.logs import ExpectedBatchWarnings, configure_logging
from scheduler.store.cassandra_batches import BatchExecutor

pytestmark = pytest.mark.unit


class Statement(SimpleStatement):  # type: ignore[misc]
    def __init__(self, replica: str, size: int) -> None:
        super().__init__("INSERT ...", keyspace="ks", routing_key=replica.encode())
        self.values = [b"x" * size]


class FakeSession:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Any] = []
        self.fail = fail
        self.cluster = SimpleNamespace(
            metadata=SimpleNamespace(
                get_replicas=lambda ks, key: [SimpleNamespace(endpoint=key.decode())],
                all_hosts=lambda: ["A", "B"],
            )
        )

    def execute_async(self, request: Any) -> Any:
        self.sent.append(request)
        fail = self.fail

        class Future:
            def result(self) -> None:
                if fail:
                    raise ConnectionError("down")

        return Future()


def test_statements_are_grouped_by_replica_and_cut_by_count_and_bytes() -> None:
    session = FakeSession()
    executor = BatchExecutor(session, max_statements=3, max_bytes=1_000, concurrency=2)
    statements = [Statement("A", 10) for _ in range(7)] + [Statement("B", 10) for _ in range(2)]
    statements += [Statement("A", 400), Statement("A", 400), Statement("A", 5_000)]
    executor.execute(statements)

    batches = [r for r in session.sent if isinstance(r, BatchStatement)]
    singles = [r for r in session.sent if not isinstance(r, BatchStatement)]
    sizes = sorted(len(b._statements_and_parameters) for b in batches)
    # A: 7 small -> 3 + 3 (count), then (small + 400) until the next 400 would pass the byte cap,
    # that 400 is left alone at the end, and the 5,000-byte one is never batched.
    # B: 2 small -> one batch of 2.
    assert sizes == [2, 2, 3, 3]
    assert len(singles) == 2
    assert sum(sizes) + len(singles) == len(statements)


def test_the_first_error_is_raised_after_every_request_settled() -> None:
    session = FakeSession(fail=True)
    executor = BatchExecutor(session, max_statements=2, max_bytes=10_000, concurrency=1)
    with pytest.raises(ConnectionError):
        executor.execute([Statement("A", 1) for _ in range(6)])
    assert len(session.sent) == 3


def test_a_batch_given_is_sent_as_it_is_never_nested() -> None:
    session = FakeSession()
    executor = BatchExecutor(session, max_statements=10, max_bytes=10_000, concurrency=4)
    already = BatchStatement()
    executor.execute([Statement("A", 1), already, Statement("A", 1)])
    assert already in session.sent
    assert len(session.sent) == 2


def test_the_expected_batch_warnings_are_dropped_and_others_kept() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("test")
        configure_logging("test")  # a second call adds no second filter
        batch_log = logging.getLogger("cassandra.protocol")
        assert sum(isinstance(f, ExpectedBatchWarnings) for f in batch_log.filters) == 1
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        root.addHandler(handler)
        batch_log.warning("Server warning: Unlogged batch covering 25 partitions detected")
        batch_log.warning("Batch for [ks.t] is of size 10675, exceeding specified threshold of 5")
        batch_log.warning("Server warning: Read 5000 live rows and 100001 tombstone cells")
        assert seen == ["Server warning: Read 5000 live rows and 100001 tombstone cells"]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
