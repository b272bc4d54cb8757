"""Per-app daily usage counts: ingested, sent, failed (table `usage_daily`), and the app's
running pending count (table `usage_pending`), derived from the same events.

APPROXIMATE by design: Cassandra counters are not idempotent, so a write retried after a timeout,
or an event replayed after a crash, can be counted twice (never fewer times than it happened,
barring a lost write). Billing-grade figures would be derived from the message records instead.
Days are UTC day numbers (epoch ms // 86_400_000).

Pending = accepted and not yet terminal = ingested + redriven - sent - failed - aborted, kept as
one running counter per app so that a read is one row, not a sum over every day of the app's
life (a message may wait years). `add(INGESTED|SENT|FAILED)` moves it together with the daily
column, in one counter batch; abort and redrive, which have no daily column, move it with
`add_pending`. It inherits the counters' drift: the ingest README ("Pending cap") lists the
sources, their direction and how they are bounded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType

DAY_MS = 86_400_000


class UsageKind(StrEnum):
    INGESTED = "ingested"
    SENT = "sent"
    FAILED = "failed"


# How one counted event moves the app's pending count.
PENDING_DELTA = {UsageKind.INGESTED: 1, UsageKind.SENT: -1, UsageKind.FAILED: -1}


@dataclass(frozen=True)
class UsageDay:
    day: int  # UTC day number
    ingested: int = 0
    sent: int = 0
    failed: int = 0


def usage_day(epoch_ms: int) -> int:
    return epoch_ms // DAY_MS


class UsageStore(Protocol):
    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        """Count `n` more events of `kind` for the app on that UTC day (approximate)."""

    def read(self, app_id: str, from_day: int, to_day: int) -> list[UsageDay]:
        """The days in [from_day, to_day] that have counts, newest first."""

    def add_pending(self, app_id: str, delta: int) -> None:
        """Move the app's pending count without a daily event (abort: -1, redrive: +1)."""

    def pending(self, app_id: str) -> int:
        """The app's pending count (approximate; may read below 0 after drift)."""


class InMemoryUsageStore:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], dict[UsageKind, int]] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        with self._lock:
            counts = self._counts.setdefault((app_id, day), {})
            counts[kind] = counts.get(kind, 0) + n
            self._pending[app_id] = self._pending.get(app_id, 0) + PENDING_DELTA[kind] * n

    def add_pending(self, app_id: str, delta: int) -> None:
        with self._lock:
            self._pending[app_id] = self._pending.get(app_id, 0) + delta

    def pending(self, app_id: str) -> int:
        with self._lock:
            return self._pending.get(app_id, 0)

    def read(self, app_id: str, from_day: int, to_day: int) -> list[UsageDay]:
        with self._lock:
            days = sorted(
                ((day, dict(c)) for (app, day), c in self._counts.items() if app == app_id),
                reverse=True,
            )
        return [
            UsageDay(
                day,
                c.get(UsageKind.INGESTED, 0),
                c.get(UsageKind.SENT, 0),
                c.get(UsageKind.FAILED, 0),
            )
            for day, c in days
            if from_day <= day <= to_day
        ]


class CassandraUsageStore:
    """UsageStore on the counter tables `usage_daily` (partition per app, days newest first) and
    `usage_pending` (one row per app)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # One statement per counter column: CQL cannot take a column name as a bind marker.
        self._add = {
            kind: session.prepare(
                f"UPDATE usage_daily SET {kind.value} = {kind.value} + ?"  # noqa: S608
                " WHERE app_id = ? AND day = ?"
            )
            for kind in UsageKind
        }
        self._read = session.prepare(
            "SELECT day, ingested, sent, failed FROM usage_daily"
            " WHERE app_id = ? AND day >= ? AND day <= ?"
        )
        self._add_pending = session.prepare(
            "UPDATE usage_pending SET pending = pending + ? WHERE app_id = ?"
        )
        self._read_pending = session.prepare("SELECT pending FROM usage_pending WHERE app_id = ?")

    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        if not n:
            return
        # One round trip for both counters (a counter batch is not atomic across partitions:
        # a partial failure is one more source of the documented drift).
        batch = BatchStatement(batch_type=BatchType.COUNTER)
        batch.add(self._add[kind], (n, app_id, day))
        batch.add(self._add_pending, (PENDING_DELTA[kind] * n, app_id))
        self._session.execute(batch)

    def add_pending(self, app_id: str, delta: int) -> None:
        if delta:
            self._session.execute(self._add_pending, (delta, app_id))

    def pending(self, app_id: str) -> int:
        row = self._session.execute(self._read_pending, (app_id,)).one()
        return int(row.pending or 0) if row is not None else 0

    def read(self, app_id: str, from_day: int, to_day: int) -> list[UsageDay]:
        rows = self._session.execute(self._read, (app_id, from_day, to_day))
        return [UsageDay(r.day, r.ingested or 0, r.sent or 0, r.failed or 0) for r in rows]
