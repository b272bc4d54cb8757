"""Which schedules the occurrence runner must look at now, without reading every schedule at
every tick (docs/SCHEDULES.md, "How the runner finds due schedules").

Each live schedule has a wake-up instant: its next occurrence after the cursor, minus the
look-ahead (the tick that may create it). The index keeps them in a heap; a tick takes the
schedules whose wake-up has come. It learns of changes made by others (create, update, pause,
resume, delete: through the API, the console or a Kafka-native record) from the store's change
rows (`ChangeFeed`), and reads every schedule once when it starts leading and then every
`rescan_ms`, a page per tick (the net for changes written by an earlier version, which adds no
change rows).

Waking a schedule early costs a read; waking it late would create an occurrence late. So a
schedule is woken again at the next tick whenever its tick failed or created nothing while it
still looks due, exactly as a pass over every schedule would look at it again.
"""

from __future__ import annotations

import heapq

from scheduler.store.ports import Schedule, ScheduleChange, ScheduleStore, ScheduleTiming

CHANGE_OVERLAP_MS = 30_000  # how far back the change rows are read, every SWEEP_MS
RECENT_MS = 2_000  # how far back at the other ticks
SWEEP_MS = 10_000
RESCAN_ROWS_PER_TICK = 200  # rows of a periodic full pass read per tick: ~10 ms of CPU

Key = tuple[str, str]  # (app id, schedule id)


def wake_ms(schedule: Schedule | ScheduleTiming, now_ms: int, lookahead_ms: int) -> int | None:
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

    def set_earlier(self, key: Key, wake: int | None) -> None:
        """`set`, but only to an earlier wake-up: for a row read some time ago (a page of a
        full pass), which a change seen since may have overtaken. An early wake-up costs a
        read, a late one would create late."""
        if wake is not None and wake < self._wake.get(key, wake + 1):
            self.set(key, wake)

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
    """The schedules changed since the last poll, each change once. Each poll reads the change
    rows of the last RECENT_MS, and every SWEEP_MS those of the last CHANGE_OVERLAP_MS (rows
    that landed late: a writer's clock a little behind, a slow write), so that a burst of
    changes (a bulk create) is not read again at every tick."""

    def __init__(self, store: ScheduleStore) -> None:
        self._store = store
        self._sweep_at: int | None = None
        self._seen: set[tuple[int, str, str]] = set()

    def restart(self, now_ms: int) -> None:
        """Read from here on; call it before a full pass, which covers the changes seen now
        (each change row is written after its schedule's write)."""
        self._seen = {self._mark(c) for c in self._store.changed_since(now_ms - CHANGE_OVERLAP_MS)}
        self._sweep_at = now_ms + SWEEP_MS

    def poll(self, now_ms: int) -> set[Key]:
        if self._sweep_at is None:
            raise RuntimeError("restart() the feed before polling it")
        since = now_ms - RECENT_MS
        if now_ms >= self._sweep_at:
            since, self._sweep_at = now_ms - CHANGE_OVERLAP_MS, now_ms + SWEEP_MS
        changed: set[Key] = set()
        for change in self._store.changed_since(since):
            mark = self._mark(change)
            if mark not in self._seen:
                self._seen.add(mark)
                changed.add((change.app_id, change.schedule_id))
        oldest = now_ms - CHANGE_OVERLAP_MS
        if len(self._seen) > 1_000 or since == oldest:
            self._seen = {m for m in self._seen if m[0] >= oldest}
        return changed

    @staticmethod
    def _mark(change: ScheduleChange) -> tuple[int, str, str]:
        return change.written_ms, change.app_id, change.schedule_id
