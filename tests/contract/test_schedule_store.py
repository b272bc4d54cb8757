"""Contract of ScheduleStore (scheduler.store.ports), for the fake and the Cassandra adapter
(plain, with encryption at rest, and with a list scan budget of 3 rows)."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest

from scheduler.clock import ManualClock
from scheduler.domain.recurrence import CatchUpPolicy, Recurrence
from scheduler.store.cursor import encode_cursor
from scheduler.store.ports import Schedule, ScheduleStore, ScheduleTiming

T0 = 1_893_499_200_000


def schedule(app: str, schedule_id: str, **changes: object) -> Schedule:
    base = Schedule(
        app_id=app,
        schedule_id=schedule_id,
        recurrence=Recurrence(
            "0 9 * * 1-5", "Europe/Berlin", start_ms=T0, catch_up=CatchUpPolicy.ALL
        ),
        payload_json='{"report":"daily"}',
        created_ms=T0,
        updated_ms=T0,
        kafka_key="k-1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def app() -> str:
    return "app-" + uuid.uuid4().hex[:8]  # the Cassandra keyspace is shared by the tests


def test_put_then_get(schedule_store: ScheduleStore) -> None:
    a = app()
    s = schedule(a, "sch-1")
    schedule_store.put(s)
    assert schedule_store.get(a, "sch-1") == s
    assert schedule_store.get(a, "sch-2") is None
    assert schedule_store.get(app(), "sch-1") is None


def test_a_flexible_window_is_stored_replaced_and_cleared(schedule_store: ScheduleStore) -> None:
    a = app()
    windowed = schedule(a, "sch-w", flexible_window_ms=900_000)
    schedule_store.put(windowed)
    assert schedule_store.get(a, "sch-w") == windowed
    wider = replace(windowed, flexible_window_ms=1_800_000, updated_ms=T0 + 1)
    schedule_store.update_definition(wider)
    assert schedule_store.get(a, "sch-w") == wider
    cleared = replace(windowed, flexible_window_ms=None, updated_ms=T0 + 2)
    schedule_store.update_definition(cleared)
    assert schedule_store.get(a, "sch-w") == cleared


def test_an_update_keeps_the_cursor_and_a_delete(schedule_store: ScheduleStore) -> None:
    a = app()
    schedule_store.put(schedule(a, "sch-1"))
    schedule_store.advance_cursor(a, "sch-1", T0 + 5_000)
    updated = schedule(
        a, "sch-1", recurrence=Recurrence("rate(5 minutes)"), payload_json="{}", kafka_key=None,
        updated_ms=T0 + 9, cursor_ms=None,
    )  # fmt: skip
    schedule_store.put(updated)
    assert schedule_store.get(a, "sch-1") == replace(updated, cursor_ms=T0 + 5_000)
    schedule_store.delete(a, "sch-1", T0 + 20)
    schedule_store.put(replace(updated, updated_ms=T0 + 30))  # a late update never undeletes
    got = schedule_store.get(a, "sch-1")
    assert got is not None and got.deleted_ms == T0 + 20


def test_the_cursor_never_moves_back_whatever_the_arrival_order(
    schedule_store: ScheduleStore,
) -> None:
    a = app()
    schedule_store.put(schedule(a, "sch-1"))
    cursors = [T0 + i * 1_000 for i in range(12)]
    random.Random(7).shuffle(cursors)
    for cursor in cursors:
        schedule_store.advance_cursor(a, "sch-1", cursor)
    got = schedule_store.get(a, "sch-1")
    assert got is not None and got.cursor_ms == T0 + 11_000


def test_pause_resume_and_delete(schedule_store: ScheduleStore) -> None:
    a = app()
    schedule_store.put(schedule(a, "sch-1"))
    schedule_store.set_paused(a, "sch-1", True, T0 + 1)
    got = schedule_store.get(a, "sch-1")
    assert got is not None and (got.paused, got.updated_ms) == (True, T0 + 1)
    schedule_store.set_paused(a, "sch-1", False, T0 + 2)
    got = schedule_store.get(a, "sch-1")
    assert got is not None and not got.paused
    schedule_store.delete(a, "sch-1", T0 + 3)
    got = schedule_store.get(a, "sch-1")
    assert got is not None and got.deleted_ms == T0 + 3


def test_changes_to_an_unknown_schedule_create_nothing(schedule_store: ScheduleStore) -> None:
    a = app()
    schedule_store.set_paused(a, "ghost", True, T0)
    schedule_store.delete(a, "ghost", T0)
    schedule_store.advance_cursor(a, "ghost", T0)
    assert schedule_store.get(a, "ghost") is None
    assert schedule_store.list(a, None, 10).items == []


def test_list_pages_through_the_live_schedules_by_id(schedule_store: ScheduleStore) -> None:
    a, other = app(), app()
    ids = [f"sch-{i:03d}" for i in range(23)]
    for schedule_id in random.Random(3).sample(ids, len(ids)):
        schedule_store.put(schedule(a, schedule_id))
    schedule_store.put(schedule(other, "sch-000"))
    deleted = set(ids[::5])
    for schedule_id in deleted:
        schedule_store.delete(a, schedule_id, T0 + 1)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        page = schedule_store.list(a, cursor, 4)
        assert len(page.items) <= 4
        seen += [s.schedule_id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [i for i in ids if i not in deleted]
    assert all(s.app_id == a for s in schedule_store.list(a, None, 100).items)


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWEtY3Vyc29y", encode_cursor(T0, "m-1")])
def test_a_foreign_cursor_is_refused(schedule_store: ScheduleStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        schedule_store.list(app(), cursor, 10)


def test_scan_timings_finds_every_app_s_schedules_but_the_deleted(
    schedule_store: ScheduleStore,
) -> None:
    a, b = app(), app()
    for s in (schedule(a, "s1"), schedule(a, "s2", paused=True), schedule(a, "s3")):
        schedule_store.put(s)
    schedule_store.put(schedule(b, "s1"))
    schedule_store.delete(a, "s3", T0 + 1)
    schedule_store.advance_cursor(b, "s1", T0 + 60_000)
    schedule_store.advance_cursor(a, "ghost", T0)  # a partial row: not a schedule
    found = {
        (t.app_id, t.schedule_id): t for t in schedule_store.scan_timings() if t.app_id in (a, b)
    }
    assert found == {
        (a, "s1"): ScheduleTiming(a, "s1", schedule(a, "s1").recurrence),
        (a, "s2"): ScheduleTiming(a, "s2", schedule(a, "s2").recurrence, paused=True),
        (b, "s1"): ScheduleTiming(b, "s1", schedule(b, "s1").recurrence, cursor_ms=T0 + 60_000),
    }


def test_an_update_of_the_definition_keeps_a_pause_written_after_the_read(
    schedule_store: ScheduleStore,
) -> None:
    a = app()
    schedule_store.put(schedule(a, "sch-1"))
    read = schedule_store.get(a, "sch-1")
    assert read is not None and not read.paused
    schedule_store.set_paused(a, "sch-1", True, T0 + 1)  # lands between the read and the write
    changed = replace(read, recurrence=Recurrence("@hourly"), payload_json="[1]", kafka_key=None)
    schedule_store.update_definition(replace(changed, updated_ms=T0 + 2))
    got = schedule_store.get(a, "sch-1")
    assert got is not None and got.paused
    assert (got.recurrence, got.payload_json, got.kafka_key, got.updated_ms) == (
        Recurrence("@hourly"), "[1]", None, T0 + 2,
    )  # fmt: skip
    schedule_store.update_definition(schedule(a, "ghost"))  # unknown: nothing appears
    assert schedule_store.get(a, "ghost") is None


def test_changes_are_ordered_by_their_instants_not_by_their_arrival(
    schedule_store: ScheduleStore,
) -> None:
    """A replayed pause (the bucketer after a crash) lands after a later resume: it is dropped,
    as is an update issued before the one already stored."""
    a = app()
    schedule_store.put(schedule(a, "sch-1"))
    schedule_store.set_paused(a, "sch-1", True, T0 + 10)
    schedule_store.set_paused(a, "sch-1", False, T0 + 20)
    schedule_store.set_paused(a, "sch-1", True, T0 + 10)  # the replay
    got = schedule_store.get(a, "sch-1")
    assert got is not None and not got.paused and got.updated_ms == T0 + 20
    newer = replace(schedule(a, "sch-1"), payload_json="[2]", updated_ms=T0 + 40)
    schedule_store.update_definition(newer)
    schedule_store.update_definition(replace(newer, payload_json="[1]", updated_ms=T0 + 30))
    got = schedule_store.get(a, "sch-1")
    assert got is not None and (got.payload_json, got.updated_ms) == ("[2]", T0 + 40)


def test_every_change_but_the_cursor_is_listed_by_the_instant_it_was_written(
    schedule_store: ScheduleStore, schedule_clock: ManualClock
) -> None:
    a = app()
    for name in ("sch-1", "sch-2", "sch-3", "sch-4"):
        schedule_store.put(schedule(a, name))
    schedule_clock.advance(61_000)  # into the next minute: the reader spans partitions
    start = schedule_clock.now_ms()
    writes = [
        lambda: schedule_store.put(schedule(a, "sch-5")),
        lambda: schedule_store.update_definition(schedule(a, "sch-1", payload_json="{}")),
        lambda: schedule_store.set_paused(a, "sch-2", True, T0 + 1),
        lambda: schedule_store.delete(a, "sch-3", T0 + 1),
        lambda: schedule_store.advance_cursor(a, "sch-4", T0 + 5),  # the runner's own: not listed
    ]
    for write in writes:
        schedule_clock.advance(20_000)
        write()
    changes = [c for c in schedule_store.changed_since(start) if c.app_id == a]
    assert [(c.written_ms - start, c.schedule_id) for c in sorted(changes)] == [
        (20_000, "sch-5"),
        (40_000, "sch-1"),
        (60_000, "sch-2"),
        (80_000, "sch-3"),
    ]
    later = [c for c in schedule_store.changed_since(start + 60_000) if c.app_id == a]
    assert [c.schedule_id for c in sorted(later)] == ["sch-2", "sch-3"]


def test_get_many_and_advance_cursors_act_as_their_single_forms(
    schedule_store: ScheduleStore,
) -> None:
    a = app()
    ids = [f"sch-{i:03d}" for i in range(150)]  # more than one read's or batch's worth
    for schedule_id in ids:
        schedule_store.put(schedule(a, schedule_id))
    schedule_store.delete(a, "sch-001", T0 + 1)
    schedule_store.advance_cursor(a, "sch-002", T0 + 500)
    found = schedule_store.get_many(a, [*ids, "sch-unknown", "sch-000"])
    assert sorted(found) == ids
    assert found["sch-001"].deleted_ms == T0 + 1
    assert found["sch-000"] == schedule_store.get(a, "sch-000")
    schedule_store.advance_cursors(a, {i: T0 + 100 for i in ids})
    after = schedule_store.get_many(a, ids)
    assert after["sch-002"].cursor_ms == T0 + 500  # never moves back
    assert {after[i].cursor_ms for i in ids if i != "sch-002"} == {T0 + 100}
    assert schedule_store.get_many(a, []) == {}
