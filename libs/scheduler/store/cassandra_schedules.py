"""ScheduleStore on Cassandra: the `schedules` table (migration 0006) and `schedule_changes`
(migration 0009: which schedules changed lately, for the occurrence runner).

The control plane writes the definition cells; the occurrence runner writes `cursor_ms` alone,
`USING TIMESTAMP` of the cursor in microseconds, so the highest cursor wins whatever the order
writes land in (the cursor never moves back) and neither writer clobbers the other's cells.
The control plane's writes carry their own instant as their timestamp too (`updated_ms` or
`at_ms`, in microseconds): of a pause and a resume, the later one issued wins in whatever order
they land, so a replayed pause (the bucketer after a crash) cannot undo a later resume.
Every write is a plain UPDATE (no lightweight transaction: it would mix Paxos and plain
timestamps on the same cells): a pause, delete or cursor of an unknown schedule leaves a partial
row without `created_ms`, which reads ignore. (`_COLUMNS` in the f-strings is a constant.)
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from scheduler.clock import Clock, SystemClock
from scheduler.domain.errors import ValidationError
from scheduler.domain.recurrence import Recurrence
from scheduler.encryption import PLAIN, ColumnCipher, cell
from scheduler.store.cursor import decode_schedule_cursor, encode_schedule_cursor
from scheduler.store.ports import (
    LIST_SCAN_BUDGET,
    Schedule,
    ScheduleChange,
    SchedulePage,
    ScheduleTiming,
)

log = logging.getLogger(__name__)
SCAN_PAGE = 500  # rows per page of the runner's pass over the table
MINUTE_MS = 60_000  # a partition of schedule_changes
GET_MANY_CHUNK = 100  # schedule ids per read (IN) or cursor batch
_COLUMNS = (
    "schedule_id, recurrence_json, payload_json, kafka_key, paused, created_ms, updated_ms,"
    " deleted_ms, cursor_ms, flexible_window_ms"
)


def schedule_payload_cell(app_id: str, schedule_id: str) -> bytes:
    """Associated data of a schedule's payload."""
    return cell("schedules.payload_json", app_id, schedule_id)


class CassandraScheduleStore:
    """`scan_budget`: rows a `list` page reads at most (deleted schedules are skipped)."""

    def __init__(
        self,
        session: Session,
        cipher: ColumnCipher = PLAIN,
        scan_budget: int = LIST_SCAN_BUDGET,
        clock: Clock | None = None,
    ) -> None:
        if scan_budget < 1:
            raise ValueError("scan_budget must be at least 1")
        self._session = session
        self._clock = clock or SystemClock()
        self._cipher = cipher
        self._scan_budget = scan_budget
        prepare = session.prepare
        self._put: PreparedStatement = prepare(
            "UPDATE schedules USING TIMESTAMP ? SET recurrence_json = ?, payload_json = ?,"
            " kafka_key = ?, paused = ?, created_ms = ?, updated_ms = ?, flexible_window_ms = ?"
            " WHERE app_id = ? AND schedule_id = ?"
        )
        self._update: PreparedStatement = prepare(
            "UPDATE schedules USING TIMESTAMP ? SET recurrence_json = ?, payload_json = ?,"
            " kafka_key = ?, updated_ms = ?, flexible_window_ms = ? WHERE app_id = ?"
            " AND schedule_id = ?"
        )
        self._get: PreparedStatement = prepare(
            f"SELECT {_COLUMNS} FROM schedules WHERE app_id = ? AND schedule_id = ?"  # noqa: S608
        )
        self._list: PreparedStatement = prepare(
            f"SELECT {_COLUMNS} FROM schedules WHERE app_id = ? AND schedule_id > ? LIMIT ?"  # noqa: S608
        )
        self._pause: PreparedStatement = prepare(
            "UPDATE schedules USING TIMESTAMP ? SET paused = ?, updated_ms = ? WHERE app_id = ?"
            " AND schedule_id = ?"
        )
        self._delete: PreparedStatement = prepare(
            "UPDATE schedules USING TIMESTAMP ? SET deleted_ms = ?, updated_ms = ? WHERE app_id = ?"
            " AND schedule_id = ?"
        )
        self._scan: PreparedStatement = prepare(
            "SELECT app_id, schedule_id, recurrence_json, paused, created_ms, deleted_ms,"
            " cursor_ms FROM schedules"
        )
        self._scan.fetch_size = SCAN_PAGE
        self._add_change: PreparedStatement = prepare(
            "INSERT INTO schedule_changes (minute, written_ms, app_id, schedule_id)"
            " VALUES (?, ?, ?, ?)"
        )
        self._changes: PreparedStatement = prepare(
            "SELECT written_ms, app_id, schedule_id FROM schedule_changes WHERE minute = ?"
            " AND written_ms >= ?"
        )
        self._get_many: PreparedStatement = prepare(
            f"SELECT {_COLUMNS} FROM schedules WHERE app_id = ? AND schedule_id IN ?"  # noqa: S608
        )
        self._cursor: PreparedStatement = prepare(
            "UPDATE schedules USING TIMESTAMP ? SET cursor_ms = ? WHERE app_id = ?"
            " AND schedule_id = ?"
        )

    def put(self, schedule: Schedule) -> None:
        s = schedule
        self._session.execute(
            self._put,
            (
                s.updated_ms * 1000,
                _recurrence_json(s),
                self._cipher.seal_payload(
                    s.payload_json, schedule_payload_cell(s.app_id, s.schedule_id)
                ),
                s.kafka_key,  # None clears the key an earlier version set
                s.paused,
                s.created_ms,
                s.updated_ms,
                s.flexible_window_ms,
                s.app_id,
                s.schedule_id,
            ),
        )
        self._record_change(s.app_id, s.schedule_id)

    def update_definition(self, schedule: Schedule) -> None:
        s = schedule
        self._session.execute(
            self._update,
            (
                s.updated_ms * 1000,
                _recurrence_json(s),
                self._cipher.seal_payload(
                    s.payload_json, schedule_payload_cell(s.app_id, s.schedule_id)
                ),
                s.kafka_key,
                s.updated_ms,
                s.flexible_window_ms,
                s.app_id,
                s.schedule_id,
            ),
        )
        self._record_change(s.app_id, s.schedule_id)

    def get(self, app_id: str, schedule_id: str) -> Schedule | None:
        row = self._session.execute(self._get, (app_id, schedule_id)).one()
        return self._schedule(app_id, row)

    def list(self, app_id: str, cursor: str | None, limit: int) -> SchedulePage:
        after = decode_schedule_cursor(cursor) if cursor is not None else ""
        items: builtins.list[Schedule] = []
        scanned, last = 0, after
        while scanned < self._scan_budget:
            want = min(self._scan_budget - scanned, limit + 1 - len(items) + 16)
            rows = builtins.list(self._session.execute(self._list, (app_id, last, want)))
            for row in rows:
                scanned += 1
                last = row.schedule_id
                schedule = self._schedule(app_id, row)
                if schedule is not None and schedule.deleted_ms is None:
                    items.append(schedule)
                    if len(items) > limit:
                        page = items[:limit]
                        return SchedulePage(page, encode_schedule_cursor(page[-1].schedule_id))
            if len(rows) < want:
                return SchedulePage(items, None)  # the partition is read through
        # The budget is spent: a short page, and the cursor goes on after the last row read.
        return SchedulePage(items, encode_schedule_cursor(last))

    def set_paused(self, app_id: str, schedule_id: str, paused: bool, at_ms: int) -> None:
        self._session.execute(self._pause, (at_ms * 1000, paused, at_ms, app_id, schedule_id))
        self._record_change(app_id, schedule_id)

    def delete(self, app_id: str, schedule_id: str, at_ms: int) -> None:
        self._session.execute(self._delete, (at_ms * 1000, at_ms, at_ms, app_id, schedule_id))
        self._record_change(app_id, schedule_id)

    def _record_change(self, app_id: str, schedule_id: str) -> None:
        """After the schedule's write: a runner that reads the change then reads the write."""
        now = self._clock.now_ms()
        self._session.execute(self._add_change, (now // MINUTE_MS, now, app_id, schedule_id))

    def advance_cursor(self, app_id: str, schedule_id: str, cursor_ms: int) -> None:
        self._session.execute(self._cursor, (cursor_ms * 1000, cursor_ms, app_id, schedule_id))

    def get_many(self, app_id: str, schedule_ids: Sequence[str]) -> dict[str, Schedule]:
        found: dict[str, Schedule] = {}
        ids = sorted(set(schedule_ids))
        for start in range(0, len(ids), GET_MANY_CHUNK):
            chunk = ids[start : start + GET_MANY_CHUNK]
            for row in self._session.execute(self._get_many, (app_id, chunk)):
                if (schedule := self._readable(app_id, row)) is not None:
                    found[schedule.schedule_id] = schedule
        return found

    def advance_cursors(self, app_id: str, cursors: Mapping[str, int]) -> None:
        # One partition: an unlogged batch is one mutation; each cursor keeps its own timestamp.
        items = sorted(cursors.items())
        for start in range(0, len(items), GET_MANY_CHUNK):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for schedule_id, cursor_ms in items[start : start + GET_MANY_CHUNK]:
                batch.add(self._cursor, (cursor_ms * 1000, cursor_ms, app_id, schedule_id))
            self._session.execute(batch)

    def scan_timings(self) -> Iterator[ScheduleTiming]:
        for row in self._session.execute(self._scan):
            if row.deleted_ms is not None or row.created_ms is None:
                continue
            try:
                recurrence = _parse_recurrence(row.recurrence_json)
            except ValidationError as exc:
                log.warning("schedule %s/%s skipped: %s", row.app_id, row.schedule_id, exc)
                continue
            yield ScheduleTiming(
                row.app_id, row.schedule_id, recurrence, bool(row.paused), row.cursor_ms
            )

    def changed_since(self, since_ms: int) -> Iterator[ScheduleChange]:
        # A row a writer whose clock runs ahead put in a later minute is read once this
        # clock gets there (the reader reads back past it).
        for minute in range(since_ms // MINUTE_MS, self._clock.now_ms() // MINUTE_MS + 1):
            for row in self._session.execute(self._changes, (minute, since_ms)):
                yield ScheduleChange(row.written_ms, row.app_id, row.schedule_id)

    def _readable(self, app_id: str, row: Any) -> Schedule | None:
        """`_schedule`, or None (logged) for a timing a newer version wrote: its runner's."""
        try:
            return self._schedule(app_id, row)
        except ValidationError as exc:
            log.warning("schedule %s/%s skipped: %s", app_id, row.schedule_id, exc)
            return None

    def _schedule(self, app_id: str, row: Any) -> Schedule | None:
        if row is None or row.created_ms is None:
            return None
        return Schedule(
            app_id=app_id,
            schedule_id=row.schedule_id,
            recurrence=_parse_recurrence(row.recurrence_json),
            payload_json=self._cipher.open(
                row.payload_json, schedule_payload_cell(app_id, row.schedule_id)
            ),
            created_ms=row.created_ms,
            updated_ms=row.updated_ms,
            kafka_key=row.kafka_key,
            paused=bool(row.paused),
            deleted_ms=row.deleted_ms,
            cursor_ms=row.cursor_ms,
            flexible_window_ms=row.flexible_window_ms,
        )


@functools.lru_cache(maxsize=4096)
def _parse_recurrence(text: str) -> Recurrence:
    """Many schedules share a timing (the same cron and zone): parse each text once. A
    Recurrence is immutable, so sharing one is safe; a ValidationError is not cached."""
    return Recurrence.from_dict(json.loads(text))


def _recurrence_json(schedule: Schedule) -> str:
    return json.dumps(schedule.recurrence.to_dict(), separators=(",", ":"), sort_keys=True)
