"""ScheduleDefinition records on the requests topic: applied to the schedule store, refused to
the rejected topic, idempotent under a replayed batch, in order with the app's requests."""

from __future__ import annotations

import dataclasses
import importlib.resources
import shutil
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from scheduler.codec import (
    RecordCodec,
    SchemaCatalogue,
    definition_subject,
    registry_client,
    value_subject,
)
from scheduler.domain.ids import new_message_id, occurrence_message_id
from scheduler.domain.status import Status
from scheduler.records import (
    Command,
    CommandKind,
    ScheduleDefinition,
    ScheduleOperation,
    ScheduleRequest,
)
from scheduler.schedule_occurrences import occurrence_request
from scheduler.store.ports import Schedule
from scheduler.store.usage import InMemoryUsageStore
from scheduler.testing.fakes import InMemoryScheduleStore
from scheduler_bucketer.intake import CachedApps, InputRecord, Intake, Rejection
from scheduler_bucketer.pipeline import Ports, build_processor
from scheduler_bucketer.settings import BucketerSettings

from .harness import COMMANDS, DEFINITIONS, SCHEDULING, Harness

pytestmark = pytest.mark.unit

PUT, PAUSE, RESUME, DELETE = (
    ScheduleOperation.PUT,
    ScheduleOperation.PAUSE,
    ScheduleOperation.RESUME,
    ScheduleOperation.DELETE,
)
MINUTE = 60_000


def with_usage(h: Harness, registry: SchemaRegistryClient | None = None) -> InMemoryUsageStore:
    """Rebuild the harness's processor with a usage store (the pending cap's, no limit)."""
    usage = InMemoryUsageStore()
    h.processor = build_processor(
        Ports(
            h.messages, h.buckets, h.apps, h.producer, h.clock, usage=usage, schedules=h.schedules
        ),
        h.topics,
        SCHEDULING,
        BucketerSettings(watermark_cache_ms=0, app_cache_ms=0),
        h.metrics,
        h.writer,
        registry,
    )
    return usage


def schedule(h: Harness, schedule_id: str, app_id: str = "app-a") -> Schedule:
    found = h.schedules.get(app_id, schedule_id)
    assert found is not None
    return found


def aborts(h: Harness) -> list[Command]:
    return [COMMANDS.decode(r.value) for r in h.producer.on(h.topics.commands)]


def outcome(h: Harness, operation: str, result: str) -> float:
    return h.metric(
        "scheduler_bucketer_schedule_definitions_total", operation=operation, outcome=result
    )


def new_id(h: Harness) -> str:
    return new_message_id(h.clock.now_ms())


# -- PUT -------------------------------------------------------------------------------------


def test_a_put_creates_the_schedule_with_its_cursor_at_the_creation() -> None:
    h = Harness()
    sid, now = new_id(h), h.clock.now_ms()
    h.process(h.definition(PUT, sid, expression="0 9 * * *", timezone="Europe/Berlin"))

    s = schedule(h, sid)
    assert (s.created_ms, s.updated_ms, s.cursor_ms, s.paused) == (now, now, now, False)
    assert (s.recurrence.expression, s.recurrence.timezone) == ("0 9 * * *", "Europe/Berlin")
    assert s.recurrence.start_ms == now  # a null start is the creation instant
    assert (s.payload_json, s.kafka_key, s.deleted_ms) == ('{"n": 1}', None, None)
    assert h.rejected() == [] and aborts(h) == []
    assert outcome(h, "PUT", "created") == 1


def test_a_put_may_create_it_paused() -> None:
    h = Harness()
    sid = new_id(h)
    h.process(h.definition(PUT, sid, paused=True, kafka_key="k-1"))
    assert schedule(h, sid).paused and schedule(h, sid).kafka_key == "k-1"


def test_a_put_stores_its_flexible_window_and_an_update_replaces_it() -> None:
    h = Harness()
    sid = new_id(h)
    h.process(h.definition(PUT, sid, flexible_window_ms=900_000))
    assert schedule(h, sid).flexible_window_ms == 900_000
    h.clock.advance(1_000)
    h.process(h.definition(PUT, sid, flexible_window_ms=60_000))
    assert schedule(h, sid).flexible_window_ms == 60_000
    h.clock.advance(1_000)
    h.process(h.definition(PUT, sid))  # a PUT without one: none, as over HTTP
    assert schedule(h, sid).flexible_window_ms is None


def test_a_put_of_an_existing_id_updates_and_keeps_created_ms_paused_and_the_cursor() -> None:
    h = Harness()
    sid, created = new_id(h), h.clock.now_ms()
    h.process(h.definition(PUT, sid, expression="rate(5 minutes)"))
    h.schedules.advance_cursor("app-a", sid, created + 10 * MINUTE)  # the runner created ahead
    h.clock.advance(1_000)
    h.process(h.definition(PAUSE, sid))
    h.clock.advance(1_000)
    h.process(
        h.definition(PUT, sid, expression="rate(7 minutes)", payload_json="[1]", kafka_key="k")
    )

    s = schedule(h, sid)
    assert (s.created_ms, s.updated_ms) == (created, created + 2_000)
    assert s.cursor_ms == created + 10 * MINUTE and s.paused
    assert (s.recurrence.expression, s.payload_json, s.kafka_key) == ("rate(7 minutes)", "[1]", "k")
    assert s.recurrence.start_ms == created  # a null start keeps the stored one
    assert outcome(h, "PUT", "updated") == 1

    h.process(h.definition(PUT, sid, start_ms=created + MINUTE))  # an explicit start replaces it
    assert schedule(h, sid).recurrence.start_ms == created + MINUTE


def test_a_put_of_a_deleted_schedule_is_refused() -> None:
    h = Harness()
    sid = new_id(h)
    h.process(h.definition(PUT, sid), h.definition(DELETE, sid))
    h.clock.advance(1)
    revive = h.definition(PUT, sid, expression="rate(2 minutes)")
    h.process(revive)

    [rejection] = h.rejected()
    assert (rejection.reason, rejection.app_id, rejection.message_id) == (
        "schedule_deleted",
        "app-a",
        sid,
    )
    assert rejection.original == revive.value
    s = schedule(h, sid)
    assert s.deleted_ms is not None and s.recurrence.expression == "rate(1 minute)"
    assert outcome(h, "PUT", "rejected") == 1


# -- PAUSE, RESUME, DELETE -------------------------------------------------------------------


def created_ahead_batch(h: Harness, sid: str) -> tuple[list[str], list[InputRecord]]:
    """A rate(1 minute) schedule started now whose runner created its next 3 occurrences (the
    requests, and the cursor at the last); returns their ids and requests."""
    start = h.clock.now_ms()
    h.process(h.definition(PUT, sid, start_ms=start))
    s = schedule(h, sid)
    instants = [start + n * MINUTE for n in (1, 2, 3)]
    occurrences = [occurrence_request(s, t, h.clock.now_ms()) for t in instants]
    h.schedules.advance_cursor("app-a", sid, instants[-1])
    return [o.message_id for o in occurrences], [h.record(o) for o in occurrences]


def status(h: Harness, message_id: str) -> Status:
    view = h.messages.get("app-a", message_id)
    assert view is not None
    return view.state.status


def test_a_pause_aborts_the_occurrences_created_ahead_but_not_within_the_cancel_guard() -> None:
    h = Harness()
    usage = with_usage(h)
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    # The first occurrence is 100 ms away, within the 200 ms cancel guard: it is delivered.
    h.clock.advance(MINUTE - 100)
    # The occurrences' requests and the pause in one batch: the requests are stored first.
    h.process(*requests, h.definition(PAUSE, sid))

    s = schedule(h, sid)
    assert s.paused and s.updated_ms == h.clock.now_ms()
    assert [status(h, i) for i in ids] == [Status.QUEUED, Status.ABORTED, Status.ABORTED]
    assert [(c.kind, c.message_id, c.generation, c.app_id) for c in aborts(h)] == [
        (CommandKind.ABORT, i, 0, "app-a") for i in ids[1:]
    ]
    assert [r.key for r in h.producer.on(h.topics.commands)] == [i.encode() for i in ids[1:]]
    assert usage.pending("app-a") == 3 - 2  # counted when stored, moved back by the abort
    log = h.messages.logs("app-a", ids[1])[-1]
    assert log.status is Status.ABORTED and log.data == {"by": "schedule paused"}
    assert outcome(h, "PAUSE", "applied") == 1

    h.process(h.definition(PAUSE, sid))  # a repeated pause aborts again, counts once
    assert usage.pending("app-a") == 1 and len(aborts(h)) == 4
    assert outcome(h, "PAUSE", "repeated") == 1


class RunnerTickDuringPause(InMemoryScheduleStore):
    """The runner's tick lands between the bucketer's first read and its pause: one more
    occurrence created ahead, its cursor stored before the flag."""

    def set_paused(self, app_id: str, schedule_id: str, paused: bool, at_ms: int) -> None:
        stored = self.get(app_id, schedule_id)
        assert stored is not None and stored.cursor_ms is not None
        self.advance_cursor(app_id, schedule_id, stored.cursor_ms + MINUTE)
        super().set_paused(app_id, schedule_id, paused, at_ms)


def test_a_pause_aborts_what_a_racing_runner_tick_created_too() -> None:
    h = Harness(schedules=RunnerTickDuringPause())
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    h.process(*requests, h.definition(PAUSE, sid))
    raced = occurrence_message_id("app-a", sid, schedule(h, sid).cursor_ms or 0)
    assert [c.message_id for c in aborts(h)] == [*ids, raced]


def kinds(h: Harness, kind: CommandKind) -> list[Command]:
    return [c for c in aborts(h) if c.kind is kind]


def test_a_resume_brings_back_the_occurrences_its_pause_aborted_as_their_next_generation() -> None:
    h = Harness()
    usage = with_usage(h)
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    h.process(*requests, h.definition(PAUSE, sid))
    assert [status(h, i) for i in ids] == [Status.ABORTED] * 3 and usage.pending("app-a") == 0
    h.clock.advance(5)
    h.process(h.definition(RESUME, sid))
    s = schedule(h, sid)
    assert not s.paused and s.updated_ms == h.clock.now_ms()
    views = [h.messages.get("app-a", i) for i in ids]
    states = [(v.state.status, v.state.generation) for v in views if v is not None]
    assert states == [(Status.READY, 1)] * 3
    redrives = kinds(h, CommandKind.REDRIVE)
    assert [(c.message_id, c.generation) for c in redrives] == [(i, 1) for i in ids]
    # each due at its own instant, as if never paused
    s0 = s.recurrence.start_ms or 0
    assert [c.send_at_ms for c in redrives] == [s0 + n * MINUTE for n in (1, 2, 3)]
    assert usage.pending("app-a") == 3
    assert h.messages.logs("app-a", ids[0])[-1].entry_id == "1:resumed"
    assert len(kinds(h, CommandKind.ABORT)) == 3  # the pause's, none more
    assert outcome(h, "RESUME", "applied") == 1

    # a replay (offsets not committed) produces the commands again, starts nothing again
    h.process(h.definition(RESUME, sid))
    assert len(kinds(h, CommandKind.REDRIVE)) == 6 and usage.pending("app-a") == 3

    # paused again: the revived generation is the one aborted
    h.process(h.definition(PAUSE, sid))
    assert [(c.message_id, c.generation) for c in kinds(h, CommandKind.ABORT)][3:] == [
        (i, 1) for i in ids
    ]
    assert [status(h, i) for i in ids] == [Status.ABORTED] * 3 and usage.pending("app-a") == 0


class PausedDuringTheResume(InMemoryScheduleStore):
    """An HTTP pause that lands after the bucketer's resume read the schedule, while it
    brings back the occurrences."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_at_read: int | None = None
        self.reads = 0

    def get(self, app_id: str, schedule_id: str) -> Schedule | None:
        self.reads += 1
        if self.pause_at_read == self.reads:
            super().set_paused(app_id, schedule_id, True, 2**42)  # later than any issued_ms
        return super().get(app_id, schedule_id)


def test_a_pause_that_races_a_resume_aborts_what_the_resume_brought_back() -> None:
    store = PausedDuringTheResume()
    h = Harness(schedules=store)
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    h.process(*requests, h.definition(PAUSE, sid))
    h.clock.advance(5)
    # reads of a resume: the stored schedule, the one after the flag, the one after the writes
    store.pause_at_read = store.reads + 3
    h.process(h.definition(RESUME, sid))
    assert schedule(h, sid).paused
    views = [h.messages.get("app-a", i) for i in ids]
    states = [(v.state.status, v.state.generation) for v in views if v is not None]
    assert states == [(Status.ABORTED, 1)] * 3
    aborted = [(c.message_id, c.generation) for c in kinds(h, CommandKind.ABORT)]
    assert aborted[3:] == [(i, 1) for i in ids]


def test_an_occurrence_its_user_aborted_stays_aborted_through_a_pause_and_a_resume() -> None:
    h = Harness()
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    h.process(*requests)
    h.process(h.command(CommandKind.ABORT, ids[1], 0))
    assert status(h, ids[1]) is Status.ABORTED
    h.clock.advance(5)
    h.process(h.definition(PAUSE, sid))
    h.clock.advance(5)
    h.process(h.definition(RESUME, sid))
    assert [c.message_id for c in kinds(h, CommandKind.REDRIVE)] == [ids[0], ids[2]]
    view = h.messages.get("app-a", ids[1])
    assert view is not None and (view.state.status, view.state.generation) == (Status.ABORTED, 0)


def test_a_delete_marks_the_schedule_and_aborts_the_occurrences_created_ahead() -> None:
    h = Harness()
    usage = with_usage(h)
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    h.process(*requests)
    h.clock.advance(10)
    h.process(h.definition(DELETE, sid))

    s = schedule(h, sid)
    assert s.deleted_ms == h.clock.now_ms()
    assert list(h.schedules.scan_timings()) == []
    assert {status(h, i) for i in ids} == {Status.ABORTED}
    assert [c.message_id for c in aborts(h)] == ids
    assert usage.pending("app-a") == 0
    assert outcome(h, "DELETE", "applied") == 1


def test_a_delete_of_a_paused_schedule_does_not_count_its_aborts_twice() -> None:
    h = Harness()
    usage = with_usage(h)
    sid = new_id(h)
    _, requests = created_ahead_batch(h, sid)
    h.process(*requests, h.definition(PAUSE, sid))
    h.clock.advance(10)
    h.process(h.definition(DELETE, sid))
    assert usage.pending("app-a") == 0  # 3 stored - 3 aborted by the pause
    assert len(aborts(h)) == 6  # aborted again all the same


@pytest.mark.parametrize("operation", [PAUSE, RESUME, DELETE])
def test_a_change_of_an_unknown_schedule_is_refused(operation: ScheduleOperation) -> None:
    h = Harness()
    sid = new_id(h)
    h.process(h.definition(operation, sid))
    [rejection] = h.rejected()
    assert (rejection.reason, rejection.message_id) == ("schedule_not_found", sid)
    assert h.schedules.get("app-a", sid) is None
    assert outcome(h, operation.value, "rejected") == 1


@pytest.mark.parametrize("operation", [PAUSE, RESUME])
def test_a_pause_or_resume_issued_after_the_delete_is_refused(operation: ScheduleOperation) -> None:
    h = Harness()
    sid = new_id(h)
    h.process(h.definition(PUT, sid), h.definition(DELETE, sid))
    h.clock.advance(1)
    h.process(h.definition(operation, sid))
    [rejection] = h.rejected()
    assert rejection.reason == "schedule_not_found"


# -- invalid definitions ---------------------------------------------------------------------

INVALID = [
    ({"expression": "0 0 9 * * *"}, "invalid_expression"),  # 6 fields
    ({"expression": None}, "invalid_expression"),
    ({"timezone": "Mars/Olympus_Mons"}, "invalid_timezone"),
    ({"catch_up": "sometimes"}, "invalid_catchUp"),
    ({"max_occurrences": 0}, "invalid_maxOccurrences"),
    ({"end_ms": 1_000_000_000_000}, "invalid_end"),  # before the start
    ({"payload_json": "{oops"}, "invalid_payload"),
    ({"payload_json": None}, "missing_payload"),
    ({"payload_json": "null"}, "missing_payload"),
    ({"payload_json": '"' + "x" * (256 * 1024) + '"'}, "payload_too_large"),
    ({"kafka_key": ""}, "invalid_kafka_key"),
    ({"app_id": "nobody"}, "unknown_app"),
    ({"app_id": "app-gone"}, "app_deleted"),
    ({"app_id": ""}, "invalid_app_id"),
    ({"schedule_id": "not-a-ulid"}, "invalid_schedule_id"),
]


@pytest.mark.parametrize(("changes", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_an_invalid_put_is_refused_and_nothing_is_stored(
    changes: dict[str, object], reason: str
) -> None:
    h = Harness()
    changes = dict(changes)
    sid = str(changes.pop("schedule_id", new_id(h)))
    app_id = str(changes.pop("app_id", "app-a"))
    record = h.definition(PUT, sid, app_id, **changes)
    valid = h.request(h.clock.now_ms() + 3_600_000)
    h.process(record, h.record(valid))  # the request behind it goes on

    [rejection] = h.rejected()
    assert (rejection.reason, rejection.original) == (reason, record.value)
    assert rejection.detail and rejection.source_offset == record.offset
    assert list(h.schedules.scan_timings()) == [] and h.schedules.get(app_id, sid) is None
    assert [m.message_id for m in h.stored()] == [valid.message_id]
    assert h.metric("scheduler_bucketer_rejected_total", reason=reason) == 1


def test_a_definition_with_a_corrupt_body_is_refused_as_malformed() -> None:
    h = Harness()
    good = DEFINITIONS.encode(
        ScheduleDefinition(
            schedule_id=new_id(h), app_id="app-a", operation=PAUSE, issued_ms=h.clock.now_ms()
        )
    )
    h.process(h.raw(good[:10] + b"\xff" * 5))  # the header names ScheduleDefinition
    [rejection] = h.rejected()
    assert rejection.reason == "malformed"
    assert outcome(h, "unknown", "rejected") == 1


# -- replays and order -----------------------------------------------------------------------


def state(h: Harness, usage: InMemoryUsageStore, sid: str, ids: list[str]) -> object:
    return (
        h.schedules.get("app-a", sid),
        [status(h, i) for i in ids],
        usage.pending("app-a"),
        len(h.rejected()),
    )


@pytest.mark.parametrize(
    "operations", [[PUT], [PUT, PAUSE], [PUT, DELETE], [PUT, PAUSE, RESUME], [PAUSE], [DELETE]]
)
def test_a_replayed_batch_leaves_the_same_state(operations: list[ScheduleOperation]) -> None:
    h = Harness()
    usage = with_usage(h)
    sid = new_id(h)
    ids: list[str] = []
    if operations[0] is not PUT:  # changes of a schedule that exists, with occurrences ahead
        ids, requests = created_ahead_batch(h, sid)
        h.process(*requests)
    h.clock.advance(MINUTE // 2)
    batch = [h.definition(op, sid) for op in operations]
    h.process(*batch)
    first = state(h, usage, sid, ids)
    for _ in range(2):  # the offsets were not committed (a failed flush, a crash): replayed
        h.clock.advance(1_000)
        h.process(*batch)
        assert state(h, usage, sid, ids) == first
    assert h.rejected() == []  # a replay is not refused (a PUT of its own deleted schedule)
    assert {c.message_id for c in aborts(h)} == set(ids)  # aborted again by each replay


def test_a_replayed_pause_does_not_abort_what_the_runner_created_after_the_resume() -> None:
    h = Harness()
    sid = new_id(h)
    _, requests = created_ahead_batch(h, sid)
    h.process(*requests)
    h.clock.advance(1_000)
    pause = h.definition(PAUSE, sid)
    h.clock.advance(5)
    batch = [pause, h.definition(RESUME, sid)]
    h.process(*batch)
    resumed = schedule(h, sid)
    assert resumed.cursor_ms is not None
    later = resumed.cursor_ms + MINUTE  # the runner, resumed, creates one more ahead
    h.schedules.advance_cursor("app-a", sid, later)
    aborted_before = len(kinds(h, CommandKind.ABORT))
    h.clock.advance(1_000)
    h.process(*batch)  # the batch again: its offsets were not committed
    assert not schedule(h, sid).paused  # the later resume still wins
    assert len(kinds(h, CommandKind.ABORT)) == aborted_before  # the replayed pause: nothing
    assert occurrence_message_id("app-a", sid, later) not in {c.message_id for c in aborts(h)}
    assert outcome(h, "PAUSE", "superseded") == 1


def test_a_batch_whose_flush_failed_is_replayed_to_the_same_state() -> None:
    h = Harness()
    usage = with_usage(h)
    sid = new_id(h)
    ids, requests = created_ahead_batch(h, sid)
    h.process(*requests)
    batch = [h.definition(PAUSE, sid), h.definition(DELETE, sid)]
    h.producer.fail_next_flush = 1  # the ABORT commands are lost with it
    with pytest.raises(Exception, match="not acknowledged"):
        h.process(*batch)
    assert aborts(h) == []
    first = state(h, usage, sid, ids)
    h.process(*batch)
    assert state(h, usage, sid, ids) == first
    # the pause, issued before the delete, is superseded; the delete aborts them again
    assert sorted(c.message_id for c in aborts(h)) == sorted(ids)


class CursorOutage(InMemoryScheduleStore):
    """Cassandra fails on the cursor write (after the definition's) while `down`."""

    down = True

    def advance_cursor(self, app_id: str, schedule_id: str, cursor_ms: int) -> None:
        if self.down:
            raise ConnectionError("Cassandra went away")
        super().advance_cursor(app_id, schedule_id, cursor_ms)


def test_a_replayed_put_completes_a_creation_that_crashed_before_its_cursor() -> None:
    store = CursorOutage()
    h = Harness(schedules=store)
    sid, created = new_id(h), h.clock.now_ms()
    record = h.definition(PUT, sid)
    with pytest.raises(ConnectionError):
        h.process(record)
    assert schedule(h, sid).cursor_ms is None  # stored half-way by the crash

    store.down = False
    h.clock.advance(5_000)
    h.process(record)
    s = schedule(h, sid)
    assert (s.created_ms, s.updated_ms, s.cursor_ms) == (created, created, created)


def test_a_batch_mixing_requests_and_definitions_of_one_app_keeps_their_order() -> None:
    h = Harness()
    first, second = new_id(h), new_id(h)
    later = h.clock.now_ms() + 3_600_000
    requests = [h.request(later) for _ in range(3)]
    batch = [h.record(requests[0]), h.definition(PUT, first), h.definition(PUT, second)]
    h.clock.advance(1)
    batch += [h.record(requests[1]), h.definition(PAUSE, first), h.definition(DELETE, second)]
    h.clock.advance(1)
    batch += [h.definition(RESUME, first), h.record(requests[2]), h.definition(PUT, second)]
    h.clock.advance(1)
    batch += [h.definition(PAUSE, first)]
    h.process(*batch)

    assert sorted(m.message_id for m in h.stored()) == sorted(r.message_id for r in requests)
    assert schedule(h, first).paused  # PUT, PAUSE, RESUME, PAUSE: applied in that order
    assert schedule(h, second).deleted_ms is not None  # PUT, DELETE, then PUT refused
    assert [(r.reason, r.message_id) for r in h.rejected()] == [("schedule_deleted", second)]
    assert outcome(h, "PAUSE", "applied") == 2 and outcome(h, "RESUME", "applied") == 1
    assert h.metric("scheduler_bucketer_consumed_total", kind="requests") == len(batch)


# -- rolling upgrade -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_schedule_requests_of_every_version_still_become_messages(version: int) -> None:
    h = Harness()
    request = dataclasses.replace(h.request(h.clock.now_ms() + 3_600_000), kafka_key="k")
    record = request.to_record()
    if version == 1:  # v1 has no kafka_key nor trace_id
        del record["kafka_key"], record["trace_id"]
    old = RecordCodec(ScheduleRequest, writer_version=version).avro.encode(record)
    h.process(h.raw(old), h.definition(PUT, new_id(h)))
    [stored] = h.stored()
    assert (stored.message_id, stored.kafka_key) == (
        request.message_id,
        "k" if version == 2 else None,
    )
    assert h.rejected() == [] and len(list(h.schedules.scan_timings())) == 1


def previous_catalogue(tmp_path: Path) -> SchemaCatalogue:
    """The schemas of the release before ScheduleDefinition."""
    root = tmp_path / "schemas"
    shutil.copytree(
        Path(str(importlib.resources.files("scheduler_schemas"))),
        root,
        ignore=shutil.ignore_patterns("__pycache__", "schedule_definition"),
    )
    catalogue = SchemaCatalogue.load(root)
    assert "scheduler.ScheduleDefinition" not in catalogue.record_types()
    return catalogue


def previous_release(h: Harness, catalogue: SchemaCatalogue, registry=None) -> None:  # type: ignore[no-untyped-def]
    """The previous bucketer: its catalogue, the ScheduleRequest-only intake, no schedules."""
    apps = CachedApps(h.apps, h.clock, 0)
    codec = RecordCodec(ScheduleRequest, catalogue=catalogue, registry=registry)
    h.processor._intake = Intake(codec, apps, SCHEDULING)
    h.processor._schedules = None


def test_a_previous_bucketer_refuses_a_definition_and_goes_on(tmp_path: Path) -> None:
    h = Harness()
    previous_release(h, previous_catalogue(tmp_path))
    before, after = (h.request(h.clock.now_ms() + 3_600_000) for _ in range(2))
    definition = h.definition(PUT, new_id(h))
    h.process(h.record(before), definition, h.record(after))

    [rejection] = h.rejected()
    assert (rejection.reason, rejection.original) == ("unknown_schema", definition.value)
    assert rejection.app_id is None and "fingerprint" in rejection.detail
    assert sorted(m.message_id for m in h.stored()) == sorted([before.message_id, after.message_id])
    assert list(h.schedules.scan_timings()) == []


def test_a_previous_bucketer_with_a_registry_refuses_a_definition_as_wrong_schema(
    tmp_path: Path,
) -> None:
    registry = registry_client("mock://bucketer-schedules-previous")
    h = Harness()
    previous_release(h, previous_catalogue(tmp_path), registry)
    topic = h.topics.requests
    writer = RecordCodec(ScheduleDefinition, registry=registry, subject=definition_subject(topic))
    definition = ScheduleDefinition(
        schedule_id=new_id(h), app_id="app-a", operation=PAUSE, issued_ms=h.clock.now_ms()
    )
    request = h.request(h.clock.now_ms() + 3_600_000)
    requests = RecordCodec(ScheduleRequest, registry=registry, subject=value_subject(topic))
    h.process(h.raw(writer.encode(definition)), h.raw(requests.encode(request)))

    [rejection] = h.rejected()
    assert rejection.reason == "wrong_schema" and "ScheduleDefinition" in rejection.detail
    assert [m.message_id for m in h.stored()] == [request.message_id]


def test_without_a_schedule_store_a_definition_is_refused_like_the_previous_release() -> None:
    h = Harness()
    h.processor = build_processor(
        Ports(h.messages, h.buckets, h.apps, h.producer, h.clock),
        h.topics,
        SCHEDULING,
        BucketerSettings(watermark_cache_ms=0, app_cache_ms=0),
        h.metrics,
        h.writer,
    )
    h.process(h.definition(PUT, new_id(h)))
    [rejection] = h.rejected()
    assert rejection.reason == "wrong_schema"


def test_definitions_in_the_confluent_format_are_told_apart_through_the_registry() -> None:
    registry = registry_client("mock://bucketer-schedules-confluent")
    h = Harness()
    with_usage(h, registry)
    topic = h.topics.requests
    writer = RecordCodec(ScheduleDefinition, registry=registry, subject=definition_subject(topic))
    requests = RecordCodec(ScheduleRequest, registry=registry, subject=value_subject(topic))
    sid = new_id(h)
    put = ScheduleDefinition(
        schedule_id=sid,
        app_id="app-a",
        operation=PUT,
        issued_ms=h.clock.now_ms(),
        expression="@hourly",
        payload_json="{}",
    )
    request = h.request(h.clock.now_ms() + 3_600_000)
    h.process(h.raw(writer.encode(put)), h.raw(requests.encode(request)))

    assert h.rejected() == []
    assert schedule(h, sid).recurrence.expression == "@hourly"
    assert [m.message_id for m in h.stored()] == [request.message_id]
    # one subject per record type: the requests' history is not the definitions'
    assert set(registry.get_subjects()) >= {value_subject(topic), definition_subject(topic)}


def test_the_intake_still_refuses_a_definition_on_the_request_path() -> None:
    """`admit` is the request path: a ScheduleDefinition there is another record type."""
    h = Harness()
    verdict = h.processor._intake.admit(h.definition(PUT, new_id(h)))
    assert isinstance(verdict, Rejection) and verdict.reason == "wrong_schema"
    assert h.processor._intake.is_definition(h.definition(PUT, new_id(h)))
    assert not h.processor._intake.is_definition(h.record(h.request(h.clock.now_ms() + 1)))
    assert not h.processor._intake.is_definition(h.raw(b"\x00\x00\x00\x00\x07"))
