"""What the occurrence runner (releaser), the schedule routes (ingest) and the Kafka-native
schedule records (bucketer) share: the request that creates one occurrence, the writes that
abort the occurrences a pause or a delete leaves behind, and those that bring back, at a
resume, the occurrences the pause aborted (docs/SCHEDULES.md, "Pause and resume").

The plans read the occurrences' records through the MessageStore they are given (blocking: the
ingest runs them in its I/O threads); the callers write and publish, each with its own clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.domain.ids import occurrence_message_id
from scheduler.domain.recurrence import CatchUpPolicy
from scheduler.domain.status import FIRST_ATTEMPT, Status
from scheduler.domain.window import instant_in_window
from scheduler.records import Command, CommandKind, ScheduleRequest
from scheduler.store.ports import LogEntry, MessageStore, Schedule, StatusUpdate, StatusWrite

SOURCE_PREFIX = "schedule:"  # a message's `source` names the schedule of its occurrence
# More than any look-ahead creates ahead (a rate of one second, a 15-minute look-ahead).
MAX_CREATED_AHEAD = 10_000
PAUSED = "schedule paused"  # the `by` of a pause's ABORTED log entries
DELETED = "schedule deleted"
RESUMED = "resumed"  # the event of the log entry that starts a revived generation


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
    schedule: Schedule, messages: MessageStore, now_ms: int, cancel_guard_ms: int, why: str
) -> tuple[list[StatusWrite], list[Command]]:
    """The ABORTED status writes and the ABORT commands (the dispatcher's view) of the
    occurrences created ahead of a stopped schedule, each at the generation its record is at (a
    resume may have revived it as the next one). One whose request the bucketer has not stored
    yet is aborted at generation 0: by precedence its READY then stays below. One ABORTED
    already (by a previous run of the same pause, or by its user) gets its command again, which
    the first run may have lost, but no write: rewriting its user's abort as a pause's would
    let a resume revive it. SENT and FAILED ones are left alone."""
    writes: list[StatusWrite] = []
    commands: list[Command] = []
    for instant in _created_ahead(schedule, now_ms, cancel_guard_ms):
        message_id = occurrence_message_id(schedule.app_id, schedule.schedule_id, instant)
        view = messages.get(schedule.app_id, message_id)
        status = None if view is None else view.state.status
        if status in (Status.SENT, Status.FAILED):
            continue
        generation = 0 if view is None else view.state.generation
        due = instant if view is None else view.state.due_ms
        if status is not Status.ABORTED:
            state = StatusUpdate(Status.ABORTED, generation, FIRST_ATTEMPT, due, now_ms)
            entry = LogEntry(now_ms, f"{generation}:aborted", Status.ABORTED, {"by": why})
            writes.append(StatusWrite(schedule.app_id, message_id, state, entry))
        commands.append(
            Command(
                message_id=message_id,
                app_id=schedule.app_id,
                kind=CommandKind.ABORT,
                generation=generation,
                issued_ms=now_ms,
                send_at_ms=due,
            )
        )
    return writes, commands


@dataclass(frozen=True)
class Revival:
    """One occurrence a resume brings back: its next generation, due at `command.send_at_ms`.
    `ready`: the READY write that starts it, after the command; None when a previous run of
    the resume started it already and only its command is produced again."""

    command: Command
    ready: StatusWrite | None


def revive_paused(
    schedule: Schedule, messages: MessageStore, now_ms: int, cancel_guard_ms: int
) -> list[Revival]:
    """The occurrences a pause aborted that a resume at `now_ms` brings back, each as the next
    generation of the same message:

    - those still ahead (after now + the cancel guard), due at their own instant;
    - of those that came due while paused, what the catch-up policy keeps (the latest one, all
      up to the bound, or none), due now; unless the runner has missed occurrences of its own
      to catch up (after its cursor), which are later and go through the same policy.

    An occurrence is brought back only if every abort of its generation was a pause's: one its
    user aborted stays aborted. One whose record is not stored yet (the bucketer behind) cannot
    be and stays aborted. A repeated resume finds the revived ones READY at the generation it
    started and produces their commands again (a REDRIVE places the same row again)."""
    cursor = schedule.cursor_ms
    if cursor is None:
        return []
    recurrence = schedule.recurrence
    guard_end = now_ms + cancel_guard_ms
    ahead = recurrence.occurrences_between(guard_end, cursor, MAX_CREATED_AHEAD)
    revivals = [r for t in ahead if (r := _revival(schedule, messages, t, now_ms)) is not None]
    next_after_cursor = recurrence.next_occurrence(cursor)
    if next_after_cursor is not None and next_after_cursor <= now_ms:
        return revivals  # the runner catches up after its cursor
    for instant in recurrence.latest_occurrences(min(cursor, guard_end), _missed_taken(schedule)):
        revival = _revival(schedule, messages, instant, now_ms)
        if revival is None:
            break  # older ones were not aborted by this pause
        revivals.append(revival)
    return revivals


def _missed_taken(schedule: Schedule) -> int:
    recurrence = schedule.recurrence
    if recurrence.catch_up is CatchUpPolicy.ALL:
        return recurrence.catch_up_limit or 0
    return 1 if recurrence.catch_up is CatchUpPolicy.LATEST else 0


def _revival(
    schedule: Schedule, messages: MessageStore, instant: int, now_ms: int
) -> Revival | None:
    app_id = schedule.app_id
    message_id = occurrence_message_id(app_id, schedule.schedule_id, instant)
    view = messages.get(app_id, message_id)
    if view is None:
        return None
    state = view.state
    if state.status not in (Status.ABORTED, Status.READY):
        return None  # neither aborted nor started by a resume: not read further
    logs = messages.logs(app_id, message_id)
    if state.status is Status.ABORTED:
        aborts = [e for e in logs if e.entry_id == f"{state.generation}:aborted"]
        if not aborts or any(e.data.get("by") != PAUSED for e in aborts):
            return None
        generation, due = state.generation + 1, max(state.due_ms, now_ms)
    elif state.status is Status.READY and any(
        e.entry_id == f"{state.generation}:{RESUMED}" for e in logs
    ):
        generation, due = state.generation, state.due_ms
    else:
        return None
    command = Command(
        message_id=message_id,
        app_id=app_id,
        kind=CommandKind.REDRIVE,
        generation=generation,
        issued_ms=now_ms,
        send_at_ms=due,
    )
    if state.status is Status.READY:
        return Revival(command, None)
    ready = StatusUpdate(Status.READY, generation, FIRST_ATTEMPT, due, now_ms)
    entry = LogEntry(now_ms, f"{generation}:{RESUMED}", Status.READY, {"by": "schedule resumed"})
    return Revival(command, StatusWrite(app_id, message_id, ready, entry))
