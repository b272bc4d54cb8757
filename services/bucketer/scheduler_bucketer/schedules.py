"""ScheduleDefinition records (Kafka-native recurring schedules) applied to the schedule store.

The same effects as the HTTP routes of ingest (docs/SCHEDULES.md):

- PUT of a new id creates the schedule (created_ms = updated_ms = issued_ms, paused from the
  record) and sets its cursor to issued_ms: nothing before the creation counts as missed;
- PUT of an existing id replaces the timing, payload and Kafka key, keeps created_ms, the
  paused flag and the cursor (an update applies to occurrences not yet created); a null
  `start_ms` keeps the stored start. A deleted schedule is not revived: `schedule_deleted`;
- PAUSE / DELETE write their flag, read the schedule again (its cursor is fresh only after the
  write) and abort the occurrences created ahead beyond the cancel guard: ABORTED records now,
  ABORT commands produced with the batch, the app's pending count moved by -n;
- RESUME clears the flag, reads the schedule again and brings back, as their next generation,
  the occurrences its pause aborted (scheduler.schedule_occurrences.revive_paused): READY
  records now, REDRIVE commands produced with the batch, the pending count moved by +n. A
  replay finds them READY at that generation and produces their commands again. Paused again
  by the read after those writes, it aborts them as a pause does;
- PAUSE, RESUME, DELETE of an unknown (or deleted) schedule: `schedule_not_found`.

A bad record is refused to the rejected topic like a bad request (nothing is written before
every check passed); only store failures raise, and the batch is retried. Every write is
idempotent and time-stamped with the record's `issued_ms`, so a replayed batch leaves the state
it left the first time:
- a replayed PUT finds its schedule and rewrites the same values (keeping the flag a later
  PAUSE of the batch set); the cursor is advanced to created_ms on every PUT (it never moves
  back), which also completes a creation a crash interrupted;
- a replayed PAUSE or DELETE writes the same flag and aborts again (the commands of the first
  run may be lost), but moves the pending count only when it changed the flag;
- a change issued before the schedule's deletion (a replay of the batch that deleted it) is
  ignored (`superseded`), not refused;
- the store orders the paused flag by the instants written, so a replayed PAUSE loses to the
  RESUME issued after it: it finds the schedule running and aborts nothing (`superseded`),
  not the occurrences the runner created since the resume.
"""

from __future__ import annotations

import dataclasses
import logging

from scheduler.clock import Clock
from scheduler.codec import DecodeError, RecordCodec
from scheduler.domain.errors import ValidationError
from scheduler.domain.validation import definition_recurrence, validate_schedule_definition
from scheduler.records import Command, ScheduleDefinition, ScheduleOperation
from scheduler.schedule_occurrences import DELETED, PAUSED, abort_created_ahead, revive_paused
from scheduler.settings import SchedulingSettings
from scheduler.store.ports import AppLookup, MessageStore, Schedule, ScheduleStore
from scheduler.store.usage import UsageStore

from .intake import InputRecord, Rejection, decode_reason
from .metrics import BucketerMetrics
from .placer import Outbox

log = logging.getLogger("scheduler_bucketer.schedules")

PUT, PAUSE, RESUME, DELETE = (
    ScheduleOperation.PUT,
    ScheduleOperation.PAUSE,
    ScheduleOperation.RESUME,
    ScheduleOperation.DELETE,
)


class ScheduleHandler:
    def __init__(
        self,
        codec: RecordCodec[ScheduleDefinition],
        store: ScheduleStore,
        messages: MessageStore,
        apps: AppLookup,
        usage: UsageStore | None,
        scheduling: SchedulingSettings,
        clock: Clock,
        metrics: BucketerMetrics,
    ) -> None:
        self._codec = codec
        self._store = store
        self._messages = messages
        self._apps = apps
        self._usage = usage
        self._scheduling = scheduling
        self._clock = clock
        self._metrics = metrics

    def apply(self, record: InputRecord, outbox: Outbox) -> list[Command]:
        """Apply one definition; returns the commands to produce with the batch: ABORT (their
        ABORTED records are written already) and REDRIVE (a resume: their READY records are
        written already). A refusal goes to `outbox.rejections`."""
        try:
            d = self._codec.decode(record.value or b"")
        except DecodeError as exc:
            return self._refuse(outbox, Rejection(record, decode_reason(exc), str(exc)), "unknown")
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            return self._refuse(outbox, Rejection(record, "malformed", detail), "unknown")
        try:
            validate_schedule_definition(d, self._scheduling)
            self._check_app(d.app_id)
            outcome, commands = self._apply(d)
        except ValidationError as exc:
            ids = {"app_id": d.app_id or None, "message_id": d.schedule_id or None}
            rejection = Rejection(record, exc.token, exc.message, **ids)
            return self._refuse(outbox, rejection, d.operation.value)
        self._metrics.schedule_definitions.labels(d.operation.value, outcome).inc()
        log.info(
            "schedule %s/%s %s: %s, %d occurrence(s) aborted or brought back",
            d.app_id,
            d.schedule_id,
            d.operation.value,
            outcome,
            len(commands),
        )
        return commands

    def _refuse(self, outbox: Outbox, rejection: Rejection, operation: str) -> list[Command]:
        self._metrics.schedule_definitions.labels(operation, "rejected").inc()
        outbox.rejections.append(rejection)
        return []

    def _check_app(self, app_id: str) -> None:
        """The same reasons as for a request."""
        app = self._apps.get_app(app_id)
        if app is None:
            raise ValidationError("unknown_app", f"no application {app_id!r}")
        if app.deleted_ms is not None:
            raise ValidationError("app_deleted", f"application {app_id!r} was deleted")

    def _apply(self, d: ScheduleDefinition) -> tuple[str, list[Command]]:
        stored = self._store.get(d.app_id, d.schedule_id)
        if stored is not None and stored.deleted_ms is not None and d.operation is not DELETE:
            if stored.deleted_ms >= d.issued_ms:
                return "superseded", []  # issued before the delete: a replay of that batch
            if d.operation is PUT:
                raise ValidationError("schedule_deleted", "the schedule was deleted")
            raise ValidationError("schedule_not_found", "no such schedule in this application")
        if d.operation is PUT:
            return self._put(d, stored), []
        if stored is None:
            raise ValidationError("schedule_not_found", "no such schedule in this application")
        if d.operation is RESUME:
            self._store.set_paused(d.app_id, d.schedule_id, False, d.issued_ms)
            resumed = self._store.get(d.app_id, d.schedule_id) or stored
            if resumed.paused:  # a pause issued later is stored
                return "superseded", []
            return "applied", self._revive(resumed)
        if d.operation is PAUSE:
            self._store.set_paused(d.app_id, d.schedule_id, True, d.issued_ms)
            # A repeated pause (or a replay) aborts again but moves the pending count once.
            first, why = not stored.paused, PAUSED
        else:
            # A repeated delete (or a replay) aborts again too: the commands may have been lost.
            first, why = stored.deleted_ms is None, DELETED
            if first:
                self._store.delete(d.app_id, d.schedule_id, d.issued_ms)
        # Read again: the cursor is fresh only after the flag is written (the runner re-checks
        # after it advances its cursor, so whichever reads second aborts what the other made).
        stopped = self._store.get(d.app_id, d.schedule_id) or stored
        if d.operation is PAUSE and not stopped.paused:
            # A resume issued later is stored (this pause is a replay, or arrived late): the
            # schedule runs, and what the runner created since must not be aborted.
            return "superseded", []
        # The occurrences of a paused schedule left the pending count with its pause.
        aborts = self._abort_created_ahead(stopped, why, move_pending=first and not stored.paused)
        return ("applied" if first else "repeated"), aborts

    def _put(self, d: ScheduleDefinition, stored: Schedule | None) -> str:
        start = d.issued_ms if stored is None else stored.recurrence.start_ms
        recurrence = definition_recurrence(d, start)  # the stored start may not fit: refused
        if stored is None:
            schedule = Schedule(
                app_id=d.app_id,
                schedule_id=d.schedule_id,
                recurrence=recurrence,
                payload_json=d.payload_json or "",
                created_ms=d.issued_ms,
                updated_ms=d.issued_ms,
                kafka_key=d.kafka_key,
                paused=bool(d.paused),
                flexible_window_ms=d.flexible_window_ms,
            )
        else:
            schedule = dataclasses.replace(
                stored,
                recurrence=recurrence,
                payload_json=d.payload_json or "",
                kafka_key=d.kafka_key,
                updated_ms=d.issued_ms,
                flexible_window_ms=d.flexible_window_ms,  # a PUT replaces it, as over HTTP
            )
        if stored is None:
            self._store.put(schedule)
        else:  # not `put`: a pause written since the read above (over HTTP) must stay
            self._store.update_definition(schedule)
        # Nothing before the creation counts as missed; never moves a cursor back.
        self._store.advance_cursor(d.app_id, d.schedule_id, schedule.created_ms)
        return "created" if stored is None else "updated"

    def _abort_created_ahead(
        self, schedule: Schedule, why: str, *, move_pending: bool
    ) -> list[Command]:
        now = self._clock.now_ms()
        guard = self._scheduling.cancel_guard_ms
        writes, commands = abort_created_ahead(schedule, self._messages, now, guard, why)
        if writes:  # ABORTED first: then the commands (decision 5)
            self._messages.update_statuses(writes)
            if move_pending:
                self._move_pending(schedule.app_id, -len(writes))
        return commands

    def _revive(self, resumed: Schedule) -> list[Command]:
        now = self._clock.now_ms()
        guard = self._scheduling.cancel_guard_ms
        revivals = revive_paused(resumed, self._messages, now, guard)
        if not revivals:
            return []
        started = [r.ready for r in revivals if r.ready is not None]
        if started:
            self._messages.update_statuses(started)
            self._move_pending(resumed.app_id, len(started))
        commands = [r.command for r in revivals]
        again = self._store.get(resumed.app_id, resumed.schedule_id)
        if again is not None and again.paused:  # an HTTP pause that raced this resume
            commands += self._abort_created_ahead(again, PAUSED, move_pending=True)
        return commands

    def _move_pending(self, app_id: str, delta: int) -> None:
        if self._usage is None:
            return
        try:
            self._usage.add_pending(app_id, delta)
        except Exception as exc:  # noqa: BLE001 - approximate; never fail the batch for it
            log.warning("pending count of %s (%+d) lost: %r", app_id, delta, exc)
