"""The batch's durable writes, as data: what to write is decided by the placer, how by a Writer.

`Writer.submit(ops)` starts the writes, `Writer.drain()` returns only when every submitted
operation is durable, or raises (the batch is then retried as a whole; every write is idempotent
by message id).

- `PortWriter`: calls the storage ports (any MessageStore / BucketStore: the fakes in unit tests),
  overlapping the calls in a small thread pool.
- `scheduler_bucketer.cassandra_batches.CassandraBatchWriter`: the production writer; the same
  statements, grouped into unlogged batches (see there why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from scheduler.records import DueMessage
from scheduler.store.ports import BucketStore, LogEntry, MessageContent, MessageStore, StatusUpdate


@dataclass(frozen=True, slots=True)
class SaveRecord:
    """MessageStore.save: content + status (by precedence) + listing + log entry."""

    content: MessageContent
    state: StatusUpdate
    log: LogEntry


@dataclass(frozen=True, slots=True)
class WriteStatus:
    """MessageStore.update_status: status (by precedence) + log entry of an existing record."""

    app_id: str
    message_id: str
    state: StatusUpdate
    log: LogEntry


@dataclass(frozen=True, slots=True)
class StoreRow:
    """BucketStore.store: one stored message in its (bucket, app, shard) partition."""

    bucket_ms: int
    shard: int
    message: DueMessage


WriteOp = SaveRecord | WriteStatus | StoreRow


class Writer(Protocol):
    """Writes are submitted (and may start) as a batch is routed, and drained before the
    watermark re-check and the commit."""

    def submit(self, ops: Sequence[WriteOp]) -> None:
        """Start making the operations durable; may return before they are."""

    def drain(self) -> None:
        """Wait until everything submitted is durable; raise the first failure (then forget
        it: the caller retries the whole batch)."""

    def close(self) -> None: ...


class PortWriter:
    def __init__(self, messages: MessageStore, buckets: BucketStore, concurrency: int) -> None:
        self._messages = messages
        self._buckets = buckets
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="bucketer-write")
        self._pending: list[Future[None]] = []

    def submit(self, ops: Sequence[WriteOp]) -> None:
        self._pending += [self._pool.submit(self._call(op)) for op in ops]

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        errors = [e for e in (f.exception() for f in pending) if e is not None]
        if errors:
            raise errors[0]

    def _call(self, op: WriteOp) -> Callable[[], None]:
        if isinstance(op, SaveRecord):
            return partial(self._messages.save, op.content, op.state, op.log)
        if isinstance(op, WriteStatus):
            return partial(self._messages.update_status, op.app_id, op.message_id, op.state, op.log)
        return partial(self._buckets.store, op.bucket_ms, op.shard, op.message)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
