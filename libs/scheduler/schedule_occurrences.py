"""What the occurrence runner (releaser) and the schedule routes (ingest) both build: the
request that creates one occurrence, and the writes that abort the occurrences a pause or a
delete leaves behind (docs/SCHEDULES.md, "When occurrences are created").

Pure: the callers do the I/O, each with its own clients.
"""

from __future__ import annotations

from scheduler.domain.ids import occurrence_message_id
from scheduler.domain.status import FIRST_ATTEMPT, Status
from scheduler.domain.window import instant_in_window
from scheduler.records import Command, CommandKind, ScheduleRequest
from scheduler.store.ports import LogEntry, Schedule, StatusUpdate, StatusWrite

SOURCE_PREFIX = "schedule:"  # a message's `source` names the schedule of its occurrence
# More than any look-ahead creates ahead (a rate of one second, a 15-minute look-ahead).
MAX_CREATED_AHEAD = 10_000


def occurrence_request(schedule: Schedule, occurrence_ms: int, now_ms: int) -> ScheduleRequest:
    """The ScheduleRequest of one occurrence: an ordinary message whose id derives from (app,
    schedule, instant), so creating it twice yields one message; with a flexible window, due
    at the instant within it that the id picks (the same one each time)."""
    message_id = occurrence_message_id(schedule.app_id, schedule.schedule_id, occurrence_ms)
    return ScheduleRequest(
        message_id=message_id,
        app_id=schedule.app_id,
        payload_json=schedule.payload_json,
        send_at_ms=instant_in_window(message_id, occurrence_ms, schedule.flexible_window_ms),
        created_ms=now_ms,
        source=SOURCE_PREFIX + schedule.schedule_id,
        kafka_key=schedule.kafka_key,
    )


def _created_ahead(schedule: Schedule, now_ms: int, cancel_guard_ms: int) -> list[int]:
    """Instants of occurrences the runner already created (at or before its cursor) that are
    not yet due and can still be aborted (due after now + the cancel guard)."""
    cursor = schedule.cursor_ms
    after = now_ms + cancel_guard_ms
    if cursor is None or cursor <= after:
        return []
    return schedule.recurrence.occurrences_between(after, cursor, MAX_CREATED_AHEAD)


def abort_created_ahead(
    schedule: Schedule, now_ms: int, cancel_guard_ms: int, why: str
) -> tuple[list[StatusWrite], list[Command]]:
    """The ABORTED status writes (by precedence: also for an occurrence whose request the
    bucketer has not stored yet, whose READY then stays below it) and the ABORT commands (the
    dispatcher's view) of the occurrences created ahead of a stopped schedule, first
    generation: an occurrence not yet due was never redriven. Empty when there are none."""
    writes: list[StatusWrite] = []
    commands: list[Command] = []
    for instant in _created_ahead(schedule, now_ms, cancel_guard_ms):
        message_id = occurrence_message_id(schedule.app_id, schedule.schedule_id, instant)
        state = StatusUpdate(Status.ABORTED, 0, FIRST_ATTEMPT, instant, now_ms)
        entry = LogEntry(now_ms, "0:aborted", Status.ABORTED, {"by": why})
        writes.append(StatusWrite(schedule.app_id, message_id, state, entry))
        commands.append(
            Command(
                message_id=message_id,
                app_id=schedule.app_id,
                kind=CommandKind.ABORT,
                generation=0,
                issued_ms=now_ms,
            )
        )
    return writes, commands
