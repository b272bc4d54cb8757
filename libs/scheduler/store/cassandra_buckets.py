"""Cassandra adapter of the BucketStore port (tables of 0001_initial.cql).

- `due_by_bucket`: one partition per (bucket, app, shard), rows in (due_ms, message_id) order.
  A stored row is keyed by the message's due time and id, so storing it again is an upsert.
- `bucket_partitions`: the (app, shard) partitions of each bucket, so the releaser finds them
  without scanning applications. The index row is written together with the message row and
  deleted after the partition itself, so an index entry never points to nothing that matters and a
  stored row is never unreachable from the index.
- `stored_buckets` / `stored_days` (0004_bucket_index.cql): the index of non-empty buckets, by
  UTC day and by era of days. A store writes both entries with its row; the releaser reads them to
  jump over empty ranges.
- `release_watermark`: row 'global' is the released-up-to watermark (progress), moved forward with
  a lightweight transaction at most once per released bucket. Row 'claim' is the releaser's claim,
  written `USING TIMESTAMP` equal to its value, so the largest claim wins without a Paxos round
  whatever order concurrent writes land in. Row 'bucket_index' marks the index complete.
- `released_buckets` (0010_released_buckets.cql): when each bucket was released, by UTC day.
  Readers of records use it with the watermark (`CassandraReleaseProgress`).

Every statement is prepared once; reads are paged (`fetch_size`), so memory stays bounded however
large a partition grows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from cassandra.cluster import ResponseFuture, Session
from cassandra.query import (
    UNSET_VALUE,
    BatchStatement,
    BatchType,
    BoundStatement,
    PreparedStatement,
)

from scheduler.domain.buckets import index_day, index_era
from scheduler.encryption import PLAIN, ColumnCipher, cell
from scheduler.records import DueMessage

WATERMARK_ROW = "global"
CLAIM_ROW = "claim"
INDEX_COMPLETE_ROW = "bucket_index"
_MAX_CAS_ROUNDS = 10


_PAYLOAD = "due_by_bucket.payload_json"


def bucket_payload_cell(app_id: str, message_id: str) -> bytes:
    """Associated data of a stored row's payload: the message's identity (its bucket, shard and
    due time may change on a reschedule; the payload of a message id never does)."""
    return cell(_PAYLOAD, app_id, message_id)


class WatermarkContention(RuntimeError):
    """The watermark row kept changing under us (should not happen with one releaser)."""


class CassandraBucketStore:
    def __init__(
        self, session: Session, fetch_size: int = 1_000, cipher: ColumnCipher = PLAIN
    ) -> None:
        # `cipher` seals `payload_json` when payload encryption is on and opens it on read.
        self._session = session
        self._cipher = cipher
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
        self._insert_bucket = prepare("INSERT INTO stored_buckets (day, bucket_ms) VALUES (?, ?)")
        self._insert_day = prepare("INSERT INTO stored_days (era, day) VALUES (?, ?)")
        self._select_days = prepare(
            "SELECT day FROM stored_days WHERE era = ? AND day >= ? AND day <= ?"
        )
        self._select_buckets = prepare(
            "SELECT bucket_ms FROM stored_buckets WHERE day = ? AND bucket_ms >= ?"
            " AND bucket_ms < ? LIMIT ?"
        )
        self._delete_day_buckets = prepare("DELETE FROM stored_buckets WHERE day = ?")
        self._delete_day = prepare("DELETE FROM stored_days WHERE era = ? AND day = ?")
        self._select_listed = prepare("SELECT DISTINCT bucket_ms FROM bucket_partitions")
        self._select_watermark = prepare(
            "SELECT released_up_to_ms FROM release_watermark WHERE name = ?"
        )
        self._select_claimed = prepare(
            "SELECT released_up_to_ms FROM release_watermark WHERE name IN ?"
        )
        self._raise_claim = prepare(
            "UPDATE release_watermark USING TIMESTAMP ? SET released_up_to_ms = ?, updated_ms = ?"
            " WHERE name = ?"
        )
        self._delete_mark = prepare("DELETE FROM release_watermark WHERE name = ?")
        self._insert_mark = prepare(
            "INSERT INTO release_watermark (name, released_up_to_ms, updated_ms) VALUES (?, ?, ?)"
        )
        self._create_watermark = prepare(
            "INSERT INTO release_watermark (name, released_up_to_ms, updated_ms)"
            " VALUES (?, ?, ?) IF NOT EXISTS"
        )
        self._raise_watermark = prepare(
            "UPDATE release_watermark SET released_up_to_ms = ?, updated_ms = ?"
            " WHERE name = ? IF released_up_to_ms < ?"
        )
        # Prepared on first use, like every statement of a table a later migration adds.
        self._insert_released: PreparedStatement | None = None

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
        statements += self._index_statements({bucket for bucket, _, _ in by_partition})
        self.execute_all(statements, concurrency)

    def store_statements(
        self,
        items: Iterable[tuple[int, int, DueMessage]],
        bound: set[tuple[object, ...]] | None = None,
    ) -> Iterator[BoundStatement]:
        """The statements `store_many` would run (rows, one listing row per partition, the
        index entries of each bucket), for a caller that groups writes of several tables into
        batches itself (the bucketer). Each index row is bound once, however many rows share it:
        `bound` holds the index rows already bound (by earlier calls for the same writes)."""
        bound = set() if bound is None else bound
        buckets: set[int] = set()
        for bucket_ms, shard, message in items:
            partition = (bucket_ms, message.app_id, shard)
            if partition not in bound:
                bound.add(partition)
                buckets.add(bucket_ms)
                yield self._insert_index.bind(partition)
            yield self._bind_row(bucket_ms, shard, message)
        yield from self._index_statements(buckets, bound)

    def _index_statements(
        self, buckets: Iterable[int], bound: set[tuple[object, ...]] | None = None
    ) -> list[BoundStatement]:
        bound = set() if bound is None else bound
        statements = []
        for bucket_ms in sorted(buckets):
            day = index_day(bucket_ms)
            if ("bucket", bucket_ms) not in bound:
                bound.add(("bucket", bucket_ms))
                statements.append(self._insert_bucket.bind((day, bucket_ms)))
            if ("day", day) not in bound:
                bound.add(("day", day))
                statements.append(self._insert_day.bind((index_era(day), day)))
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
                self._cipher.seal_payload(
                    m.payload_json, partial(bucket_payload_cell, m.app_id, m.message_id)
                ),
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
            payload = self._cipher.open(
                row.payload_json, partial(bucket_payload_cell, app_id, row.message_id)
            )
            yield DueMessage(
                message_id=row.message_id,
                app_id=row.app_id,
                generation=row.generation,
                attempt=row.attempt,
                due_ms=row.due_ms,
                send_at_ms=row.send_at_ms,
                created_ms=row.created_ms,
                payload_json=payload,
                kafka_key=row.kafka_key,
            )

    # -- the index of non-empty buckets ---------------------------------------------------------

    def stored_buckets(self, from_ms: int, until_ms: int, limit: int) -> list[int]:
        if until_ms <= from_ms or limit <= 0:
            return []
        found: list[int] = []
        first_day, last_day = index_day(max(0, from_ms)), index_day(until_ms - 1)
        for era in range(index_era(first_day), index_era(last_day) + 1):
            for day_row in self._session.execute(self._select_days, (era, first_day, last_day)):
                rows = self._session.execute(
                    self._select_buckets, (day_row.day, from_ms, until_ms, limit - len(found))
                )
                found += [row.bucket_ms for row in rows]
                if len(found) >= limit:
                    return found
        return found

    def forget_day(self, day: int) -> None:
        # Buckets first, then the day: a crash in between leaves a day entry with no buckets.
        self._session.execute(self._delete_day_buckets, (day,))
        self._session.execute(self._delete_day, (index_era(day), day))

    def listed_buckets(self) -> Iterator[int]:
        statement = self._select_listed.bind(())
        statement.fetch_size = self._fetch_size
        for row in self._session.execute(statement):
            yield int(row.bucket_ms)

    def index_bucket(self, bucket_ms: int) -> None:
        self.execute_all(self._index_statements([bucket_ms]))

    def index_complete(self) -> bool:
        row = self._session.execute(self._select_watermark, (INDEX_COMPLETE_ROW,)).one()
        return row is not None

    def mark_index_complete(self, now_ms: int) -> None:
        self._session.execute(self._insert_mark, (INDEX_COMPLETE_ROW, now_ms, now_ms))

    def mark_index_incomplete(self) -> None:
        self._session.execute(self._delete_mark, (INDEX_COMPLETE_ROW,))

    # -- release state: watermark and claim -----------------------------------------------------

    def claimed_up_to(self) -> int:
        rows = self._session.execute(self._select_claimed, ([WATERMARK_ROW, CLAIM_ROW],))
        return max((int(row.released_up_to_ms or 0) for row in rows), default=0)

    def claim_only(self) -> int:
        row = self._session.execute(self._select_watermark, (CLAIM_ROW,)).one()
        return 0 if row is None or row.released_up_to_ms is None else int(row.released_up_to_ms)

    def claim(self, up_to_ms: int, now_ms: int) -> None:
        # The cell timestamp is the claim itself (in the microsecond unit Cassandra expects), so
        # a lower claim that lands later never overwrites a higher one.
        self._session.execute(self._raise_claim, (up_to_ms * 1_000, up_to_ms, now_ms, CLAIM_ROW))

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
            # The first column of a conditional write's row is "[applied]" (named `applied`);
            # a failed condition adds the current value, or nothing if no row exists.
            outcome = raised.one()
            if outcome.applied:
                return
            if getattr(outcome, "released_up_to_ms", None) is not None:
                return  # already at or beyond the target: never move backwards
            created = self._session.execute(
                self._create_watermark, (WATERMARK_ROW, released_up_to_ms, now_ms)
            )
            if created.one().applied:
                return
            # Another writer created the row between our two statements: compare again.
        raise WatermarkContention("could not advance the release watermark")

    def mark_released(self, bucket_ms: int, now_ms: int) -> None:
        if self._insert_released is None:
            self._insert_released = self._session.prepare(
                "INSERT INTO released_buckets (day, bucket_ms, released_ms) VALUES (?, ?, ?)"
            )
        self._session.execute(self._insert_released, (index_day(bucket_ms), bucket_ms, now_ms))


class CassandraReleaseProgress:
    """ReleaseProgress on `release_watermark` and `released_buckets`. The watermark is read at
    most once per `max_age_s` (a list page or a burst of reads costs one read): it only grows,
    so a cached value is merely a moment behind."""

    def __init__(
        self,
        session: Session,
        max_age_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._max_age_s = max_age_s
        self._monotonic = monotonic
        self._select_watermark = session.prepare(
            "SELECT released_up_to_ms FROM release_watermark WHERE name = ?"
        )
        self._select_released: PreparedStatement | None = None  # prepared on first use
        self._lock = threading.Lock()
        self._cached: tuple[float, int] | None = None  # (read at, watermark)

    def released_up_to(self) -> int:
        return self.start_released_up_to().result()

    def start_released_up_to(self) -> Future[int]:
        """`released_up_to` without blocking: a driver callback may chain on it."""
        now = self._monotonic()
        found: Future[int] = Future()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self._max_age_s:
                found.set_result(self._cached[1])
                return found

        def read(rows: Any) -> None:
            row = rows[0] if rows else None
            value = 0 if row is None or row.released_up_to_ms is None else row.released_up_to_ms
            with self._lock:
                self._cached = (now, int(value))
            found.set_result(int(value))

        future = self._session.execute_async(self._select_watermark, (WATERMARK_ROW,))
        future.add_callbacks(read, found.set_exception)
        return found

    def released_at(self, bucket_ms: int) -> int | None:
        if self._select_released is None:
            self._select_released = self._session.prepare(
                "SELECT released_ms FROM released_buckets WHERE day = ? AND bucket_ms = ?"
            )
        row = self._session.execute(self._select_released, (index_day(bucket_ms), bucket_ms)).one()
        return None if row is None else int(row.released_ms)


def _wait(future: ResponseFuture, first_error: BaseException | None) -> BaseException | None:
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - collected, re-raised once every write is settled
        return first_error or exc
    return first_error
