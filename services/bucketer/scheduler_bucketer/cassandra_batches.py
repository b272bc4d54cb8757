"""The production Writer: the storage adapters' own statements, sent as unlogged batches.

Why: one long-horizon message is several row writes (its record, with content, status and log
entry in one statement; its listing row; its bucket row; and the index rows it shares with
others). Sent one request per statement, the Python
driver's per-request cost caps the bucketer near 1,000 messages/s on a small host; grouped into
unlogged batches, far fewer requests carry the same mutations (see README, "Performance").

How, without a second copy of any CQL: the stores give their bound statements
(`CassandraMessageStore.save_statements` / `status_statement`,
`CassandraBucketStore.store_statements`) for all the operations of a submit at once, so a row
that many messages share (listing day, bucket partition, bucket and day index) is bound once, not
once per message; `BatchExecutor` (scheduler.store.cassandra_batches) groups them by replica into
unlogged batches and sends them with a bounded number in flight.

An unlogged batch is not atomic and need not be: each write is idempotent, and the Kafka batch is
committed only after every statement succeeded; a failure retries the whole Kafka batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cassandra.cluster import Session
from cassandra.query import Statement

from scheduler.store.cassandra_batches import BatchExecutor
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore

from .writer import SaveRecord, StoreRow, WriteOp, WriteStatus


class CassandraBatchWriter:
    """Writer for the real stores: the stores' statements, streamed as batches."""

    def __init__(
        self,
        session: Session,
        messages: CassandraMessageStore,
        buckets: CassandraBucketStore,
        max_statements: int,
        max_bytes: int,
        concurrency: int,
    ) -> None:
        self._messages = messages
        self._buckets = buckets
        self._executor = BatchExecutor(session, max_statements, max_bytes, concurrency)

    def submit(self, ops: Sequence[WriteOp]) -> None:
        self._executor.add(self._statements(ops))

    def _statements(self, ops: Sequence[WriteOp]) -> Iterator[Statement]:
        messages = self._messages
        yield from messages.save_statements(
            (op.content, op.state, op.log) for op in ops if isinstance(op, SaveRecord)
        )
        for op in ops:
            if isinstance(op, WriteStatus):
                yield messages.status_statement(op.app_id, op.message_id, op.state, op.log)
        yield from self._buckets.store_statements(
            (op.bucket_ms, op.shard, op.message) for op in ops if isinstance(op, StoreRow)
        )

    def drain(self) -> None:
        self._executor.wait()

    def close(self) -> None:
        return None
