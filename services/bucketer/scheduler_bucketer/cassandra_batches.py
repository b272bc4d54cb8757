"""The production Writer: the storage adapters' own statements, sent as unlogged batches.

Why: one long-horizon message is about seven row writes (record content and status, listing,
listing day, log entry, bucket row, bucket index). Sent one request per statement, the Python
driver's per-request cost caps the bucketer near 1,000 messages/s on a small host; grouped into
unlogged batches, far fewer requests carry the same mutations (see README, "Performance").

How, without a second copy of any CQL:
- `CapturingSession` (scheduler.store.cassandra_batches) stands in for the driver session of a
  `CassandraMessageStore`: its `save` / `update_status` hand their bound statements to the
  capture instead of the network.
- `CassandraBucketStore.store_statements` gives the bucket rows and index rows.
- `BatchExecutor` (scheduler.store.cassandra_batches) groups them by replica into unlogged
  batches and sends them with a bounded number in flight.

An unlogged batch is not atomic and need not be: each write is idempotent, and the Kafka batch is
committed only after every statement succeeded; a failure retries the whole Kafka batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

from cassandra.cluster import Session
from cassandra.query import Statement

from scheduler.encryption import PLAIN, ColumnCipher
from scheduler.store.cassandra_batches import BatchExecutor, CapturingSession
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.cassandra_messages import CassandraMessageStore

from .writer import SaveRecord, StoreRow, WriteOp, WriteStatus


class CassandraBatchWriter:
    """Writer for the real stores: capture the adapters' statements, stream them as batches."""

    def __init__(
        self,
        session: Session,
        buckets: CassandraBucketStore,
        max_statements: int,
        max_bytes: int,
        concurrency: int,
        cipher: ColumnCipher = PLAIN,
    ) -> None:
        self._capture = CapturingSession(session)
        self._messages = CassandraMessageStore(cast(Session, self._capture), cipher)
        self._buckets = buckets
        self._executor = BatchExecutor(session, max_statements, max_bytes, concurrency)

    def submit(self, ops: Sequence[WriteOp]) -> None:
        self._executor.add(self._statements(ops))

    def _statements(self, ops: Sequence[WriteOp]) -> Iterator[Statement]:
        for op in ops:
            if isinstance(op, SaveRecord):
                self._messages.save(op.content, op.state, op.log)
            elif isinstance(op, WriteStatus):
                self._messages.update_status(op.app_id, op.message_id, op.state, op.log)
            elif isinstance(op, StoreRow):
                yield from self._buckets.store_statements([(op.bucket_ms, op.shard, op.message)])
            yield from self._capture.take()

    def drain(self) -> None:
        self._executor.wait()

    def close(self) -> None:
        return None
