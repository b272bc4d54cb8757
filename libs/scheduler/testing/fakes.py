"""In-memory fakes of the storage ports, for fast unit tests.

They pass the same contract suites (tests/contract/) as the Cassandra adapters.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from scheduler.clock import Clock, SystemClock
from scheduler.domain.buckets import index_day
from scheduler.domain.idempotency import KeyClaim, KeyHolder
from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.store.cursor import (
    decode_cursor,
    decode_schedule_cursor,
    encode_cursor,
    encode_schedule_cursor,
)
from scheduler.store.ports import (
    LIST_SCAN_BUDGET,
    Application,
    LogEntry,
    MessageContent,
    MessagePage,
    MessageView,
    ReleaseProgress,
    Schedule,
    ScheduleChange,
    SchedulePage,
    ScheduleTiming,
    StatusUpdate,
    StatusWrite,
    held_by_record,
)
from scheduler.store.release_view import shown_view, with_release_entries


class NothingReleased:
    """ReleaseProgress of a store no releaser ever ran on."""

    def released_up_to(self) -> int:
        return 0

    def released_at(self, bucket_ms: int) -> int | None:
        return None


class InMemoryMessageStore:
    """`scan_budget`: listing rows a `list` page reads at most, as in the Cassandra adapter;
    `release`: where readers learn how far the release went (an InMemoryBucketStore)."""

    def __init__(
        self,
        clock: Clock | None = None,
        scan_budget: int = LIST_SCAN_BUDGET,
        release: ReleaseProgress | None = None,
    ) -> None:
        if scan_budget < 1:
            raise ValueError("scan_budget must be at least 1")
        self._scan_budget = scan_budget
        self._release = release or NothingReleased()
        self._content: dict[tuple[str, str], MessageContent] = {}
        self._state: dict[tuple[str, str], StatusUpdate] = {}
        self._logs: dict[tuple[str, str], dict[tuple[int, str], LogEntry]] = {}
        self._claims: dict[tuple[str, str], tuple[KeyClaim, int]] = {}  # -> (claim, expires)
        self._clock = clock or SystemClock()  # claim expiry only
        self._lock = threading.Lock()

    def claim_keys(self, claims: Sequence[KeyClaim], ttl_ms: int) -> list[KeyHolder]:
        holders: list[KeyHolder] = []
        first: dict[tuple[str, str], KeyHolder] = {}
        for claim in claims:
            key = (claim.app_id, claim.idempotency_key)
            if key in first:  # the same key earlier in this call: its holder
                held = first[key]
                holders.append(KeyHolder(held.claim, False, held.status))
                continue
            view = self.get(claim.app_id, claim.message_id)
            if view is not None:
                holder = held_by_record(claim, view)
            else:
                with self._lock:  # the conditional insert: check and write under one lock
                    now = self._clock.now_ms()
                    live = self._claims.get(key)
                    if live is not None and live[1] > now:
                        holder = KeyHolder(live[0], won=False)
                    else:
                        self._claims[key] = (claim, now + ttl_ms)
                        holder = KeyHolder(claim, won=True)
            first[key] = holder
            holders.append(holder)
        return holders

    def save(self, content: MessageContent, state: StatusUpdate, log: LogEntry) -> None:
        key = (content.app_id, content.message_id)
        with self._lock:
            self._content[key] = _keep_unset(self._content.get(key), content)
            self._write_state(key, state, log)

    def update_status(
        self, app_id: str, message_id: str, state: StatusUpdate, log: LogEntry
    ) -> None:
        # Like Cassandra's blind write: a status that overtakes its content is kept, invisible
        # until the content is saved.
        with self._lock:
            self._write_state((app_id, message_id), state, log)

    def update_statuses(self, writes: Sequence[StatusWrite]) -> None:
        for w in writes:
            self.update_status(w.app_id, w.message_id, w.state, w.log)

    def _write_state(self, key: tuple[str, str], state: StatusUpdate, log: LogEntry) -> None:
        current = self._state.get(key)
        if current is None or state.precedence > current.precedence:
            self._state[key] = state
        elif state.precedence == current.precedence:
            self._state[key] = _tie(current, state)
        self._logs.setdefault(key, {})[(log.at_ms, log.entry_id)] = log

    def recorded(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        with self._lock:
            return {k for k in keys if k in self._content and k in self._state}

    def get(self, app_id: str, message_id: str) -> MessageView | None:
        key = (app_id, message_id)
        with self._lock:
            if key not in self._content or key not in self._state:
                return None
            view = MessageView(self._content[key], self._state[key])
        return self._shown(view)

    def _shown(self, view: MessageView) -> MessageView:
        """Like the adapter: a stored READY below the release watermark shows as QUEUED."""
        if not view.state.stored:
            return view
        return shown_view(view, self._release.released_up_to())

    def states(self, app_id: str, message_ids: Sequence[str]) -> dict[str, StatusUpdate]:
        """The dispatcher's StatusReader, like CassandraStatusReader: the status group of every
        record with a status, its content saved or not (a status that overtook its content is
        evidence too: an abort, or a delivery already made)."""
        with self._lock:
            return {
                message_id: self._state[(app_id, message_id)]
                for message_id in message_ids
                if (app_id, message_id) in self._state
            }

    def logs(self, app_id: str, message_id: str) -> list[LogEntry]:
        with self._lock:
            entries = self._logs.get((app_id, message_id), {})
            written = [entries[k] for k in sorted(entries)]
        return with_release_entries(written, self._release.released_at)

    def list(
        self, app_id: str, status: Status | None, cursor: str | None, limit: int
    ) -> MessagePage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = decode_cursor(cursor) if cursor else None
        with self._lock:
            views = [
                MessageView(content, self._state[key])
                for key, content in self._content.items()
                if key[0] == app_id and key in self._state
            ]
        views = [self._shown(v) for v in views]
        views.sort(key=lambda v: (v.content.created_ms, v.content.message_id), reverse=True)
        if after is not None:
            views = [v for v in views if (v.content.created_ms, v.content.message_id) < after]
        # Like the adapter: the page stops at limit + 1 matches or once the budget of listing
        # rows is read, and then continues after the last row read (a short page, maybe empty).
        scanned = views[: self._scan_budget]
        found = [v for v in scanned if status is None or v.state.status is status]
        if len(found) > limit:
            tail = found[limit - 1].content
            return MessagePage(found[:limit], encode_cursor(tail.created_ms, tail.message_id))
        if len(views) > len(scanned):
            last = scanned[-1].content
            return MessagePage(found, encode_cursor(last.created_ms, last.message_id))
        return MessagePage(found, None)


def _keep_unset(stored: MessageContent | None, written: MessageContent) -> MessageContent:
    """Cassandra leaves an absent optional content field unset: an earlier value survives."""
    if stored is None:
        return written
    kept = {
        f.name: getattr(stored, f.name)
        for f in dataclasses.fields(written)
        if getattr(written, f.name) is None
    }
    return dataclasses.replace(written, **kept)


def _tie(stored: StatusUpdate, written: StatusUpdate) -> StatusUpdate:
    """Two status writes of one precedence (one Cassandra cell timestamp) merge cell by cell as
    Cassandra reconciles them: a null (tombstone) wins, otherwise the larger serialized value."""
    merged: dict[str, Any] = {
        f.name: _reconcile(getattr(stored, f.name), getattr(written, f.name))
        for f in dataclasses.fields(stored)
    }
    return dataclasses.replace(stored, **merged)


def _reconcile(a: object, b: object) -> object:
    if a is None or b is None:
        return None
    return max(a, b, key=_serialized)


def _serialized(value: object) -> bytes:
    """The order Cassandra compares tied cells in: their bytes (int/bigint: big-endian two's
    complement, so a negative is larger than any positive; text: UTF-8)."""
    if isinstance(value, Status):
        value = value.value
    if isinstance(value, int):
        return (value % 2**64).to_bytes(8, "big")
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"no Cassandra order for {value!r}")


class InMemoryBucketStore:
    def __init__(self) -> None:
        self._rows: dict[tuple[int, str, int], dict[tuple[int, str], DueMessage]] = {}
        self._index: dict[int, set[int]] = {}  # day -> indexed buckets
        self._watermark = 0
        self._claim = 0
        self._released: dict[int, int] = {}  # bucket -> released at
        self._index_complete = True  # a fresh store: nothing can be unindexed
        self._lock = threading.Lock()

    def store(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        with self._lock:
            partition = self._rows.setdefault((bucket_ms, message.app_id, shard), {})
            partition[(message.due_ms, message.message_id)] = message
            self._index.setdefault(index_day(bucket_ms), set()).add(bucket_ms)

    def store_unindexed(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        """What a writer of the previous version did: the row and its listing, no index."""
        with self._lock:
            partition = self._rows.setdefault((bucket_ms, message.app_id, shard), {})
            partition[(message.due_ms, message.message_id)] = message

    def partitions(self, bucket_ms: int) -> list[tuple[str, int]]:
        with self._lock:
            return sorted((app, shard) for (b, app, shard) in self._rows if b == bucket_ms)

    def read(self, bucket_ms: int, app_id: str, shard: int) -> Iterator[DueMessage]:
        with self._lock:
            partition = dict(self._rows.get((bucket_ms, app_id, shard), {}))
        for key in sorted(partition):
            yield partition[key]

    def remove(self, bucket_ms: int, shard: int, message: DueMessage) -> None:
        with self._lock:
            partition = self._rows.get((bucket_ms, message.app_id, shard), {})
            partition.pop((message.due_ms, message.message_id), None)

    def drop_partition(self, bucket_ms: int, app_id: str, shard: int) -> None:
        with self._lock:
            self._rows.pop((bucket_ms, app_id, shard), None)

    def stored_buckets(self, from_ms: int, until_ms: int, limit: int) -> list[int]:
        with self._lock:
            found = sorted(
                b for buckets in self._index.values() for b in buckets if from_ms <= b < until_ms
            )
        return found[:limit]

    def forget_day(self, day: int) -> None:
        with self._lock:
            self._index.pop(day, None)

    def listed_buckets(self) -> Iterator[int]:
        with self._lock:
            buckets = sorted({b for (b, _, _) in self._rows})
        yield from buckets

    def index_bucket(self, bucket_ms: int) -> None:
        with self._lock:
            self._index.setdefault(index_day(bucket_ms), set()).add(bucket_ms)

    def index_complete(self) -> bool:
        with self._lock:
            return self._index_complete

    def mark_index_complete(self, now_ms: int) -> None:
        with self._lock:
            self._index_complete = True

    def mark_index_incomplete(self) -> None:
        with self._lock:
            self._index_complete = False

    def watermark(self) -> int:
        with self._lock:
            return self._watermark

    def advance_watermark(self, released_up_to_ms: int, now_ms: int) -> None:
        with self._lock:
            self._watermark = max(self._watermark, released_up_to_ms)

    def claimed_up_to(self) -> int:
        with self._lock:
            return max(self._claim, self._watermark)

    def claim_only(self) -> int:
        with self._lock:
            return self._claim

    def claim(self, up_to_ms: int, now_ms: int) -> None:
        with self._lock:
            self._claim = max(self._claim, up_to_ms)

    def mark_released(self, bucket_ms: int, now_ms: int) -> None:
        with self._lock:
            self._released[bucket_ms] = now_ms

    # ReleaseProgress, for an InMemoryMessageStore's readers

    def released_up_to(self) -> int:
        return self.watermark()

    def released_at(self, bucket_ms: int) -> int | None:
        with self._lock:
            return self._released.get(bucket_ms)


class InMemoryApps:
    """A fake AppLookup: tests put applications in directly."""

    def __init__(self, *apps: Application) -> None:
        self.apps: dict[str, Application] = {app.app_id: app for app in apps}

    def get_app(self, app_id: str) -> Application | None:
        return self.apps.get(app_id)


class InMemoryScheduleStore:
    """ScheduleStore in memory, with the Cassandra adapter's semantics (contract-tested): every
    write carries its instant, and each cell keeps the value of the latest one issued (a tie on
    the paused flag: paused, as Cassandra keeps the larger value)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], Schedule] = {}
        self._stamps: dict[tuple[str, str], dict[str, int]] = {}  # cell -> instant written
        self._changes: list[ScheduleChange] = []

    def put(self, schedule: Schedule) -> None:
        s = schedule
        key = (s.app_id, s.schedule_id)
        with self._lock:
            if key not in self._rows:
                self._rows[key] = dataclasses.replace(s, deleted_ms=None, cursor_ms=None)
                self._stamps[key] = {}
        self._change(
            s.app_id,
            s.schedule_id,
            s.updated_ms,
            recurrence=s.recurrence,
            payload_json=s.payload_json,
            kafka_key=s.kafka_key,
            created_ms=s.created_ms,
            paused=s.paused,
            flexible_window_ms=s.flexible_window_ms,
        )

    def update_definition(self, schedule: Schedule) -> None:
        s = schedule
        self._change(
            s.app_id,
            s.schedule_id,
            s.updated_ms,
            recurrence=s.recurrence,
            payload_json=s.payload_json,
            kafka_key=s.kafka_key,
            flexible_window_ms=s.flexible_window_ms,
        )

    def get(self, app_id: str, schedule_id: str) -> Schedule | None:
        with self._lock:
            return self._rows.get((app_id, schedule_id))

    def list(self, app_id: str, cursor: str | None, limit: int) -> SchedulePage:
        after = decode_schedule_cursor(cursor) if cursor is not None else ""
        with self._lock:
            found = sorted(
                (s for (a, i), s in self._rows.items() if a == app_id and i > after),
                key=lambda s: s.schedule_id,
            )
        live = [s for s in found if s.deleted_ms is None]
        page = live[:limit]
        more = len(live) > limit
        return SchedulePage(page, encode_schedule_cursor(page[-1].schedule_id) if more else None)

    def set_paused(self, app_id: str, schedule_id: str, paused: bool, at_ms: int) -> None:
        self._change(app_id, schedule_id, at_ms, paused=paused)

    def delete(self, app_id: str, schedule_id: str, at_ms: int) -> None:
        self._change(app_id, schedule_id, at_ms, deleted_ms=at_ms)

    def advance_cursor(self, app_id: str, schedule_id: str, cursor_ms: int) -> None:
        with self._lock:
            stored = self._rows.get((app_id, schedule_id))
            if stored is not None and (stored.cursor_ms is None or cursor_ms > stored.cursor_ms):
                self._rows[(app_id, schedule_id)] = dataclasses.replace(stored, cursor_ms=cursor_ms)

    def scan_timings(self) -> Iterator[ScheduleTiming]:
        with self._lock:
            rows = list(self._rows.values())
        return iter(
            [
                ScheduleTiming(s.app_id, s.schedule_id, s.recurrence, s.paused, s.cursor_ms)
                for s in rows
                if s.deleted_ms is None
            ]
        )

    def get_many(self, app_id: str, schedule_ids: Sequence[str]) -> dict[str, Schedule]:
        return {i: s for i in schedule_ids if (s := self.get(app_id, i)) is not None}

    def advance_cursors(self, app_id: str, cursors: Mapping[str, int]) -> None:
        for schedule_id, cursor_ms in cursors.items():
            self.advance_cursor(app_id, schedule_id, cursor_ms)

    def changed_since(self, since_ms: int) -> Iterator[ScheduleChange]:
        with self._lock:
            return iter([c for c in self._changes if c.written_ms >= since_ms])

    def _change(self, app_id: str, schedule_id: str, at_ms: int, **changes: Any) -> None:
        """Write the cells of `changes` (and `updated_ms`) at `at_ms`: a cell written later
        keeps its value."""
        key = (app_id, schedule_id)
        with self._lock:
            stored = self._rows.get(key)
            if stored is None:
                return
            stamps = self._stamps[key]
            kept: dict[str, Any] = {}
            for name, value in {**changes, "updated_ms": at_ms}.items():
                stamp = stamps.get(name, -1)
                tie_won = name == "paused" and value and not stored.paused
                if at_ms > stamp or (at_ms == stamp and (name != "paused" or tie_won)):
                    kept[name] = value
                    stamps[name] = at_ms
            self._rows[key] = dataclasses.replace(stored, **kept)
            self._changes.append(ScheduleChange(self._clock.now_ms(), app_id, schedule_id))
