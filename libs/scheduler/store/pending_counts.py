"""Approximate counts of stored (not yet released) messages per bucket and per day (tables
`pending_by_bucket` and `pending_by_day`, migration 0003), read by the releaser's
pending-by-horizon gauge.

Why counters: counting the rows of `due_by_bucket` would cost a read of every pending message
per scrape (millions at scale). Instead the bucketer adds each batch's stored messages, one
counter update per distinct bucket and day of the batch, and the gauge reads at most a few
thousand counter rows however many messages wait.

APPROXIMATE, in known directions:
- nothing is ever subtracted: the reader sums only buckets at or after the release watermark,
  so a released bucket stops counting by itself;
- an aborted or rescheduled stored message stays counted in its old bucket until that bucket is
  released (over-count, bounded by the aborts of the horizon);
- a batch retried after a failure counts its stored messages again (over-count); a counter write
  that fails is not retried (under-count, logged and counted by the bucketer).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from scheduler.settings import DAY_MS

PERIOD_DAYS = 1_024  # days per `pending_by_day` partition
_BATCH_UPDATES = 100  # counter updates per (single-partition) batch


def day_of(epoch_ms: int) -> int:
    return epoch_ms // DAY_MS


def period_of(day: int) -> int:
    return day // PERIOD_DAYS


class PendingCounts(Protocol):
    def add(self, stored: Mapping[int, int]) -> None:
        """Count stored messages: bucket start (epoch ms) -> how many were stored into it."""

    def buckets_of_day(self, day: int) -> list[tuple[int, int]]:
        """(bucket_ms, count) of the buckets of that UTC day that have counts, in time order."""

    def days_of_period(self, period: int) -> list[tuple[int, int]]:
        """(day, count) of the days of that period (`period_of`) that have counts, in order."""

    def forget_day(self, day: int) -> None:
        """Drop the counts of a day whose buckets are all released (they are never read again)."""


def _days_and_buckets(stored: Mapping[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    by_day: dict[int, int] = {}
    by_bucket: dict[int, int] = {}
    for bucket_ms, n in stored.items():
        if n:
            by_bucket[bucket_ms] = by_bucket.get(bucket_ms, 0) + n
            by_day[day_of(bucket_ms)] = by_day.get(day_of(bucket_ms), 0) + n
    return by_day, by_bucket


class InMemoryPendingCounts:
    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self._days: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, stored: Mapping[int, int]) -> None:
        by_day, by_bucket = _days_and_buckets(stored)
        with self._lock:
            for bucket_ms, n in by_bucket.items():
                self._buckets[bucket_ms] = self._buckets.get(bucket_ms, 0) + n
            for day, n in by_day.items():
                self._days[day] = self._days.get(day, 0) + n

    def buckets_of_day(self, day: int) -> list[tuple[int, int]]:
        with self._lock:
            return sorted((b, n) for b, n in self._buckets.items() if day_of(b) == day)

    def days_of_period(self, period: int) -> list[tuple[int, int]]:
        with self._lock:
            return sorted((d, n) for d, n in self._days.items() if period_of(d) == period)

    def forget_day(self, day: int) -> None:
        with self._lock:
            self._days.pop(day, None)
            for bucket_ms in [b for b in self._buckets if day_of(b) == day]:
                del self._buckets[bucket_ms]


class CassandraPendingCounts:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._add_bucket = session.prepare(
            "UPDATE pending_by_bucket SET stored = stored + ? WHERE day = ? AND bucket_ms = ?"
        )
        self._add_day = session.prepare(
            "UPDATE pending_by_day SET stored = stored + ? WHERE period = ? AND day = ?"
        )
        self._read_buckets = session.prepare(
            "SELECT bucket_ms, stored FROM pending_by_bucket WHERE day = ?"
        )
        self._read_days = session.prepare("SELECT day, stored FROM pending_by_day WHERE period = ?")
        self._forget_buckets = session.prepare("DELETE FROM pending_by_bucket WHERE day = ?")
        self._forget_day = session.prepare(
            "DELETE FROM pending_by_day WHERE period = ? AND day = ?"
        )

    def add(self, stored: Mapping[int, int]) -> None:
        by_day, by_bucket = _days_and_buckets(stored)
        # One counter batch per partition (a day of buckets, a period of days), in chunks: a
        # batch spread over far horizons touches many buckets, and one batch over many
        # partitions would hit Cassandra's batch size limits. The batches run concurrently.
        per_partition: dict[tuple[str, int], list[tuple[PreparedStatement, tuple[int, ...]]]] = {}
        for bucket_ms, n in by_bucket.items():
            day = day_of(bucket_ms)
            per_partition.setdefault(("bucket", day), []).append(
                (self._add_bucket, (n, day, bucket_ms))
            )
        for day, n in by_day.items():
            per_partition.setdefault(("day", period_of(day)), []).append(
                (self._add_day, (n, period_of(day), day))
            )
        futures = []
        for updates in per_partition.values():
            for start in range(0, len(updates), _BATCH_UPDATES):
                batch = BatchStatement(batch_type=BatchType.COUNTER)
                for statement, values in updates[start : start + _BATCH_UPDATES]:
                    batch.add(statement, values)
                futures.append(self._session.execute_async(batch))
        errors = []
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - every batch is awaited, then the first raised
                errors.append(exc)
        if errors:
            raise errors[0]

    def buckets_of_day(self, day: int) -> list[tuple[int, int]]:
        rows = self._session.execute(self._read_buckets, (day,))
        return [(int(r.bucket_ms), int(r.stored or 0)) for r in rows]

    def days_of_period(self, period: int) -> list[tuple[int, int]]:
        rows = self._session.execute(self._read_days, (period,))
        return [(int(r.day), int(r.stored or 0)) for r in rows]

    def forget_day(self, day: int) -> None:
        # Cassandra leaves a counter deleted then incremented again undefined; a day is forgotten
        # only once all its buckets are released, and nothing reads released buckets.
        self._session.execute(self._forget_buckets, (day,))
        self._session.execute(self._forget_day, (period_of(day), day))
