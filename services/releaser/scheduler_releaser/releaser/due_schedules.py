"""Which schedules the occurrence runner must look at now, without reading every schedule at
every tick (docs/SCHEDULES.md, "How the runner finds due schedules").

Each live schedule has a wake-up instant: its next occurrence after the cursor, minus the
look-ahead (the tick that may create it). The index keeps them in a heap; a tick takes the
schedules whose wake-up has come. It learns of changes made by others (create, update, pause,
resume, delete: through the API, the console or a Kafka-native record) from the store's change
rows, read back `CHANGE_OVERLAP_MS` each tick (a writer's clock a little behind, a write that
took long to land), and re-reads every schedule once when it starts leading and then every
`rescan_ms` (changes written by an earlier version, which adds no change rows).

Waking a schedule early costs a read; waking it late would create an occurrence late. So a
schedule is woken again at the next tick whenever its tick failed or created nothing while it
still looks due, exactly as a pass over every schedule would look at it again.
"""

from __future__ import annotations

import heapq

from scheduler.store.ports import Schedule, ScheduleChange, ScheduleStore

CHANGE_OVERLAP_MS = 30_000

Key = tuple[str, str]  # (app id, schedule id)


def wake_ms(schedule: Schedule, now_ms: int, lookahead_ms: int) -> int | None:
    """When the runner must next look at `schedule`; None: never, until it changes (paused,
    deleted, or past its last occurrence)."""
    if schedule.paused or schedule.deleted_ms is not None:
        return None
    # Without a cursor nothing at or before now exists for the schedule (plan_tick).
    after = now_ms if schedule.cursor_ms is None else schedule.cursor_ms
    following = schedule.recurrence.next_occurrence(after)
    return None if following is None else following - lookahead_ms


class DueIndex:
    """Wake-up instants of schedules; a later `set` of a key replaces its earlier one."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, str]] = []
        self._wake: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._wake)

    def set(self, key: Key, wake: int | None) -> None:
        if wake is None:
            self._wake.pop(key, None)
            return
        if self._wake.get(key) == wake:
            return
        self._wake[key] = wake
        heapq.heappush(self._heap, (wake, *key))
        if len(self._heap) > 2 * len(self._wake) + 1024:  # replaced entries piled up
            self._heap = [(w, *k) for k, w in self._wake.items()]
            heapq.heapify(self._heap)

    def pop_due(self, now_ms: int) -> list[Key]:
        """The keys whose wake-up is at or before `now_ms`, removed (the caller sets them
        again once it has looked at them)."""
        due: list[Key] = []
        while self._heap and self._heap[0][0] <= now_ms:
            wake, app_id, schedule_id = heapq.heappop(self._heap)
            key = (app_id, schedule_id)
            if self._wake.get(key) == wake:  # not replaced since
                del self._wake[key]
                due.append(key)
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._wake.clear()


class ChangeFeed:
    """The schedules changed since the last poll, each change once."""

    def __init__(self, store: ScheduleStore) -> None:
        self._store = store
        self._from_ms: int | None = None
        self._seen: set[tuple[int, str, str]] = set()

    def restart(self, now_ms: int) -> None:
        """Read from here on; call it before a full pass, which covers the changes seen now
        (each change row is written after its schedule's write)."""
        self._from_ms = now_ms - CHANGE_OVERLAP_MS
        self._seen = {self._mark(c) for c in self._store.changed_since(self._from_ms)}

    def poll(self, now_ms: int) -> set[Key]:
        if self._from_ms is None:
            raise RuntimeError("restart() the feed before polling it")
        changed: set[Key] = set()
        seen: set[tuple[int, str, str]] = set()
        for change in self._store.changed_since(self._from_ms):
            mark = self._mark(change)
            seen.add(mark)
            if mark not in self._seen:
                changed.add((change.app_id, change.schedule_id))
        self._from_ms = max(self._from_ms, now_ms - CHANGE_OVERLAP_MS)
        self._seen = {m for m in seen if m[0] >= self._from_ms}
        return changed

    @staticmethod
    def _mark(change: ScheduleChange) -> tuple[int, str, str]:
        return change.written_ms, change.app_id, change.schedule_id
