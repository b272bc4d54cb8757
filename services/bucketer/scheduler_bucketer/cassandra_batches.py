"""The production Writer: the storage adapters' own statements, sent as unlogged batches.

Why: one long-horizon message is several row writes (its record, with content, status and log
entry in one statement; its listing row; its bucket row; and the index rows it shares with
others). Sent one request per statement, the Python
driver's per-request cost caps the bucketer near 1,000 messages/s on a small host; grouped into
unlogged batches, far fewer requests carry the same mutations (see README, "Performance").

How, without a second copy of any CQL: the stores give their bound statements
(`CassandraMessageStore.save_statements` / `status_statement`,
`CassandraBucketStore.store_statements`), and a row that many messages share (listing day, bucket
partition, bucket and day index) is bound once per drain (a Kafka batch, submitted in chunks),
not once per message; `BatchExecutor` (scheduler.store.cassandra_batches) groups the statements
by replica into unlogged batches and sends them with a bounded number in flight.

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
        # The shared rows bound since the last drain (a Kafka batch is submitted in chunks).
        self._listing_days: set[tuple[str, int]] = set()
        self._index_rows: set[tuple[object, ...]] = set()

    def submit(self, ops: Sequence[WriteOp]) -> None:
        try:
            self._executor.add(self._statements(ops))
        except Exception:
            self._forget_bound()  # the batch is retried whole: bind everything again
            raise

    def _statements(self, ops: Sequence[WriteOp]) -> Iterator[Statement]:
        messages = self._messages
        yield from messages.save_statements(
            ((op.content, op.state, op.log) for op in ops if isinstance(op, SaveRecord)),
            self._listing_days,
        )
        for op in ops:
            if isinstance(op, WriteStatus):
                yield messages.status_statement(op.app_id, op.message_id, op.state, op.log)
        yield from self._buckets.store_statements(
            ((op.bucket_ms, op.shard, op.message) for op in ops if isinstance(op, StoreRow)),
            self._index_rows,
        )

    def drain(self) -> None:
        try:
            self._executor.wait()
        finally:
            self._forget_bound()

    def _forget_bound(self) -> None:
        self._listing_days.clear()
        self._index_rows.clear()

    def close(self) -> None:
        return None
