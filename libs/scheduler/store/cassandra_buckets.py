"""Cassandra adapter of the BucketStore port (tables of 0001_initial.cql).

- `due_by_bucket`: one partition per (bucket, app, shard), rows in (due_ms, message_id) order.
  A stored row is keyed by the message's due time and id, so storing it again is an upsert.
- `bucket_partitions`: the (app, shard) partitions of each bucket, so the releaser finds them
  without scanning applications. The index row is written together with the message row and
  deleted after the partition itself, so an index entry never points to nothing that matters and a
  stored row is never unreachable from the index.
- `release_watermark` (row 'global'): moved forward with a lightweight transaction; it is written
  once per release tick, so the Paxos round costs nothing that matters.

Every statement is prepared once; reads are paged (`fetch_size`), so memory stays bounded however
large a partition grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from cassandra.cluster import ResponseFuture, Session
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, BoundStatement

from scheduler.records import DueMessage

WATERMARK_ROW = "global"
_MAX_CAS_ROUNDS = 10


class WatermarkContention(RuntimeError):
    """The watermark row kept changing under us (should not happen with one releaser)."""


class CassandraBucketStore:
    def __init__(self, session: Session, fetch_size: int = 1_000) -> None:
        self._session = session
        self._fetch_size = fetch_size
        prepare = session.prepare
        self._insert_row = prepare(
            "INSERT INTO due_by_bucket (bucket_ms, app_id, shard, due_ms, message_id, generation,"
            " attempt, send_at_ms, created_ms, payload_json, kafka_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_index = prepare(
            "INSERT INTO bucket_partitions (bucket_ms, app_id, shard) VALUES (?, ?, ?)"
        )
        self._select_partitions = prepare(
            "SELECT app_id, shard FROM bucket_partitions WHERE bucket_ms = ?"
        )
        self._select_rows = prepare(
            "SELECT message_id, app_id, generation, attempt, due_ms, send_at_ms, created_ms,"
            " payload_json, kafka_key FROM due_by_bucket"
            " WHERE bucket_ms = ? AND app_id = ? AND shard = ?"
        )
        self._delete_row = prepare(
            "DELETE FROM due_by_bucket WHERE bucket_ms = ? AND app_id = ? AND shard = ?"
            " AND due_ms = ? AND message_id = ?"
        )
        self._delete_partition = prepare(
            "DELETE FROM due_by_bucket WHERE bucket_ms = ? AND app_id = ? AND shard = ?"
        )
        self._delete_index = prepare(
            "DELETE FROM bucket_partitions WHERE bucket_ms = ? AND app_id = ? AND shard = ?"
        )
        self._select_watermark = prepare(
            "SELECT released_up_to_ms FROM release_watermark WHERE name = ?"
        )
        self._create_watermark = prepare(
            "INSERT INTO release_watermark (name, released_up_to_ms, updated_ms)"
            " VALUES (?, ?, ?) IF NOT EXISTS"
        )
        self._raise_watermark = prepare(
            "UPDATE release_watermark SET released_up_to_ms = ?, updated_ms = ?"
            " WHERE name = ? IF released_up_to_ms < ?"
        )

    # -- writes of stored messages ------------------------------------------------------------

    def store(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        self.store_many([(bucket_ms, shard, message)])

    def store_many(
        self, items: Sequence[tuple[int, int, DueMessage]], concurrency: int = 64
    ) -> None:
        """Store several messages, at most `concurrency` writes in flight; raises the first error.

        Rows of one partition travel in one unlogged batch (a single-partition mutation, cheap for
        the coordinator); each partition's index row is written once per call.
        """
        by_partition: dict[tuple[int, str, int], list[DueMessage]] = {}
        for bucket_ms, shard, message in items:
            by_partition.setdefault((bucket_ms, message.app_id, shard), []).append(message)
        statements: list[BoundStatement | BatchStatement] = []
        for (bucket_ms, app_id, shard), messages in by_partition.items():
            statements.append(self._insert_index.bind((bucket_ms, app_id, shard)))
            statements.append(self._rows_statement(bucket_ms, shard, messages))
        self.execute_all(statements, concurrency)

    def store_statements(
        self, items: Sequence[tuple[int, int, DueMessage]]
    ) -> list[BoundStatement]:
        """The statements `store_many` would run (rows, and one index row per partition), for a
        caller that groups writes of several tables into batches itself (the bucketer)."""
        statements = []
        partitions: set[tuple[int, str, int]] = set()
        for bucket_ms, shard, message in items:
            partition = (bucket_ms, message.app_id, shard)
            if partition not in partitions:
                partitions.add(partition)
                statements.append(self._insert_index.bind(partition))
            statements.append(self._bind_row(bucket_ms, shard, message))
        return statements

    def _rows_statement(
        self, bucket_ms: int, shard: int, messages: Sequence[DueMessage]
    ) -> BoundStatement | BatchStatement:
        if len(messages) == 1:
            return self._bind_row(bucket_ms, shard, messages[0])
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for message in messages:
            batch.add(self._bind_row(bucket_ms, shard, message))
        return batch

    def _bind_row(self, bucket_ms: int, shard: int, m: DueMessage) -> BoundStatement:
        return self._insert_row.bind(
            (
                bucket_ms,
                m.app_id,
                shard,
                m.due_ms,
                m.message_id,
                m.generation,
                m.attempt,
                m.send_at_ms,
                m.created_ms,
                m.payload_json,
                # Unset, not null: a bound null writes a tombstone cell on every row.
                UNSET_VALUE if m.kafka_key is None else m.kafka_key,
            )
        )

    def execute_all(
        self, statements: Iterable[BoundStatement | BatchStatement], concurrency: int = 64
    ) -> None:
        """Run statements concurrently (bounded window); wait for all; raise the first error."""
        in_flight: list[ResponseFuture] = []
        first_error: BaseException | None = None
        for statement in statements:
            if len(in_flight) >= concurrency:
                first_error = _wait(in_flight.pop(0), first_error)
            in_flight.append(self._session.execute_async(statement))
        for future in in_flight:
            first_error = _wait(future, first_error)
        if first_error is not None:
            raise first_error

    def remove(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        self._session.execute(
            self._delete_row,
            (bucket_ms, message.app_id, shard, message.due_ms, message.message_id),
        )

    def drop_partition(self, bucket_ms: int, app_id: str, shard: int) -> None:
        # Rows first, then the index: a crash in between leaves an index entry of an empty
        # partition, which the releaser drops again; never rows without an index entry.
        self._session.execute(self._delete_partition, (bucket_ms, app_id, shard))
        self._session.execute(self._delete_index, (bucket_ms, app_id, shard))

    # -- reads --------------------------------------------------------------------------------

    def partitions(self, bucket_ms: int) -> list[tuple[str, int]]:
        statement = self._select_partitions.bind((bucket_ms,))
        statement.fetch_size = self._fetch_size
        # Clustering order (app_id, shard) is already the sorted order.
        return [(row.app_id, row.shard) for row in self._session.execute(statement)]

    def read(self, bucket_ms: int, app_id: str, shard: int) -> Iterator[DueMessage]:
        statement = self._select_rows.bind((bucket_ms, app_id, shard))
        statement.fetch_size = self._fetch_size
        # The driver fetches the next page only when iteration reaches it.
        for row in self._session.execute(statement):
            yield DueMessage(
                message_id=row.message_id,
                app_id=row.app_id,
                generation=row.generation,
                attempt=row.attempt,
                due_ms=row.due_ms,
                send_at_ms=row.send_at_ms,
                created_ms=row.created_ms,
                payload_json=row.payload_json,
                kafka_key=row.kafka_key,
            )

    # -- watermark ----------------------------------------------------------------------------

    def watermark(self) -> int:
        row = self._session.execute(self._select_watermark, (WATERMARK_ROW,)).one()
        if row is None or row.released_up_to_ms is None:
            return 0
        return int(row.released_up_to_ms)

    def advance_watermark(self, released_up_to_ms: int, now_ms: int) -> None:
        for _ in range(_MAX_CAS_ROUNDS):
            raised = self._session.execute(
                self._raise_watermark,
                (released_up_to_ms, now_ms, WATERMARK_ROW, released_up_to_ms),
            )
            if raised.was_applied:
                return
            # A failed condition returns the current value, or only [applied] if no row exists.
            if getattr(raised.one(), "released_up_to_ms", None) is not None:
                return  # already at or beyond the target: never move backwards
            created = self._session.execute(
                self._create_watermark, (WATERMARK_ROW, released_up_to_ms, now_ms)
            )
            if created.was_applied:
                return
            # Another writer created the row between our two statements: compare again.
        raise WatermarkContention("could not advance the release watermark")


def _wait(future: ResponseFuture, first_error: BaseException | None) -> BaseException | None:
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - collected, re-raised once every write is settled
        return first_error or exc
    return first_error
