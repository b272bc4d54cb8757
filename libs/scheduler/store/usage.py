"""Per-app daily usage counts: ingested, sent, failed (table `usage_daily`).

APPROXIMATE by design: Cassandra counters are not idempotent, so a write retried after a timeout,
or an event replayed after a crash, can be counted twice (never fewer times than it happened,
barring a lost write). Billing-grade figures would be derived from the message records instead.
Days are UTC day numbers (epoch ms // 86_400_000).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cassandra.cluster import Session

DAY_MS = 86_400_000


class UsageKind(StrEnum):
    INGESTED = "ingested"
    SENT = "sent"
    FAILED = "failed"


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


class InMemoryUsageStore:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], dict[UsageKind, int]] = {}
        self._lock = threading.Lock()

    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        with self._lock:
            counts = self._counts.setdefault((app_id, day), {})
            counts[kind] = counts.get(kind, 0) + n

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
    """UsageStore on the counter table `usage_daily` (partition per app, days newest first)."""

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

    def add(self, app_id: str, day: int, kind: UsageKind, n: int = 1) -> None:
        if n:
            self._session.execute(self._add[kind], (n, app_id, day))

    def read(self, app_id: str, from_day: int, to_day: int) -> list[UsageDay]:
        rows = self._session.execute(self._read, (app_id, from_day, to_day))
        return [UsageDay(r.day, r.ingested or 0, r.sent or 0, r.failed or 0) for r in rows]
