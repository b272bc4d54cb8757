"""Recurring schedules (docs/SCHEDULES.md): create, read, list, update, pause, resume, delete.

The definition lives in the ScheduleStore; the occurrence runner (releaser) turns it into
ordinary messages ahead of their instants and keeps the cursor. So:

- a new schedule's cursor is its creation instant: nothing before it counts as missed;
- an update replaces the timing, payload and Kafka key, and keeps `created_ms`, `paused` and the
  cursor; occurrences already created keep what they were created with;
- a pause or a delete writes its flag first, then reads the schedule again (its cursor is fresh
  only after the write) and aborts the occurrences created ahead that are not within the cancel
  guard. The runner re-checks the schedule after it advances its cursor, so whichever of the two
  reads second sees the other's write and aborts what the other created;
- a resume clears the flag, then brings back, as their next generation, the occurrences the
  pause aborted: those still ahead at their own instant, and what the catch-up policy keeps of
  those that came due while paused (scheduler.schedule_occurrences.revive_paused). An
  occurrence its user aborted stays aborted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from scheduler.clock import Clock
from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import is_message_id, new_message_id
from scheduler.domain.recurrence import INVALID_END, INVALID_START, Recurrence
from scheduler.domain.sendat import format_rfc3339_ms, parse_instant
from scheduler.domain.validation import validate_payload_json
from scheduler.domain.window import check_window
from scheduler.schedule_occurrences import DELETED, PAUSED
from scheduler.settings import SchedulingSettings
from scheduler.store.cursor import decode_schedule_cursor
from scheduler.store.ports import Schedule, ScheduleStore
from scheduler_ingest.bodies import _optional_string, dumps  # the kafkaKey rules of a message
from scheduler_ingest.errors import ApiError
from scheduler_ingest.io import BlockingIo
from scheduler_ingest.messages import MessageService

log = logging.getLogger("scheduler_ingest.schedules")

UPDATE_FIELDS: Final = frozenset(
    {
        "expression",
        "timezone",
        "start",
        "end",
        "maxOccurrences",
        "catchUp",
        "catchUpLimit",
        "payload",
        "kafkaKey",
        "flexibleWindowMs",
    }
)
CREATE_FIELDS: Final = UPDATE_FIELDS | {"paused"}


@dataclass(frozen=True)
class ScheduleDraft:
    """A valid body: what a create or an update writes."""

    recurrence: Recurrence
    payload_json: str
    kafka_key: str | None
    paused: bool
    flexible_window_ms: int | None = None


def parse_schedule(
    raw: Any, *, default_start_ms: int | None, creating: bool, max_payload_bytes: int
) -> ScheduleDraft:
    """The body of a create (`creating`) or an update; raises ValidationError with the token.
    `start` omitted or null takes `default_start_ms` (creation: now; update: the current one)."""
    if not isinstance(raw, dict):
        raise ValidationError("invalid_request", "a schedule must be a JSON object")
    allowed = CREATE_FIELDS if creating else UPDATE_FIELDS
    unknown = sorted(set(raw) - allowed)
    if unknown:
        hint = ""
        if "paused" in unknown and not creating:
            hint = "; pause and resume with PUT /schedules/{scheduleId}/pause and .../resume"
        raise ValidationError(
            "unknown_field",
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}{hint}",
        )
    expression = raw.get("expression")
    start = parse_instant(raw.get("start"), INVALID_START, "start")
    recurrence = Recurrence(
        expression="" if expression is None else expression,  # "" answers "is required"
        timezone=_or(raw.get("timezone"), "UTC"),
        start_ms=default_start_ms if start is None else start,
        end_ms=parse_instant(raw.get("end"), INVALID_END, "end"),
        max_occurrences=raw.get("maxOccurrences"),
        catch_up=_or(raw.get("catchUp"), "latest"),
        catch_up_limit=raw.get("catchUpLimit"),
    )
    if raw.get("payload") is None:
        raise ValidationError("missing_payload", "payload is required (any JSON value but null)")
    payload_json = dumps(raw["payload"])
    validate_payload_json(payload_json, max_payload_bytes)
    paused = _or(raw.get("paused"), False)
    if not isinstance(paused, bool):
        raise ValidationError("invalid_paused", "paused must be true or false")
    return ScheduleDraft(
        recurrence,
        payload_json,
        _optional_string(raw, "kafkaKey"),
        paused,
        check_window(raw.get("flexibleWindowMs")),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _time(ms: int | None) -> str | None:
    return None if ms is None else format_rfc3339_ms(ms)


def schedule_json(schedule: Schedule, now_ms: int) -> dict[str, Any]:
    s, r = schedule, schedule.recurrence
    # Occurrences up to the cursor exist as messages already: the next one still to create.
    upcoming = None if s.paused else r.next_occurrence(max(now_ms, s.cursor_ms or now_ms))
    return {
        "scheduleId": s.schedule_id,
        "appId": s.app_id,
        "expression": r.expression,
        "timezone": r.timezone,
        "start": _time(r.start_ms),
        "end": _time(r.end_ms),
        "maxOccurrences": r.max_occurrences,
        "catchUp": r.catch_up.value,
        "catchUpLimit": r.catch_up_limit,
        "payload": json.loads(s.payload_json),
        "kafkaKey": s.kafka_key,
        "flexibleWindowMs": s.flexible_window_ms or 0,
        "paused": s.paused,
        "createdAt": format_rfc3339_ms(s.created_ms),
        "updatedAt": format_rfc3339_ms(s.updated_ms),
        "createdUntil": _time(s.cursor_ms),
        "nextOccurrence": _time(upcoming),
    }


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no such schedule in this application")


class ScheduleService:
    def __init__(
        self,
        *,
        store: ScheduleStore,
        messages: MessageService,
        clock: Clock,
        scheduling: SchedulingSettings,
        io: BlockingIo,
    ) -> None:
        self._store = store
        self._messages = messages
        self._clock = clock
        self._scheduling = scheduling
        self._io = io

    def render(self, schedule: Schedule) -> dict[str, Any]:
        return schedule_json(schedule, self._clock.now_ms())

    def _parse(self, raw: Any, default_start_ms: int | None, creating: bool) -> ScheduleDraft:
        return parse_schedule(
            raw,
            default_start_ms=default_start_ms,
            creating=creating,
            max_payload_bytes=self._scheduling.max_payload_bytes,
        )

    async def create(self, app_id: str, raw: Any) -> Schedule:
        """Raises ValidationError for a bad body."""
        now = self._clock.now_ms()
        draft = self._parse(raw, now, creating=True)  # start defaults to now, as in EventBridge
        schedule = Schedule(
            app_id=app_id,
            schedule_id=new_message_id(now),
            recurrence=draft.recurrence,
            payload_json=draft.payload_json,
            created_ms=now,
            updated_ms=now,
            kafka_key=draft.kafka_key,
            paused=draft.paused,
            flexible_window_ms=draft.flexible_window_ms,
        )
        await self._io(self._store.put, schedule)
        # Nothing before the creation counts as missed (the runner starts after the cursor).
        await self._io(self._store.advance_cursor, app_id, schedule.schedule_id, now)
        return dataclasses.replace(schedule, cursor_ms=now)

    async def get(self, app_id: str, schedule_id: str) -> Schedule:
        """The live schedule; 404 for an unknown, deleted or malformed id (or another app's)."""
        if not is_message_id(schedule_id):
            raise not_found()
        schedule = await self._io(self._store.get, app_id, schedule_id)
        if schedule is None or schedule.deleted_ms is not None:
            raise not_found()
        return schedule

    async def list(
        self, app_id: str, start_from: str | None, limit: int
    ) -> tuple[list[Schedule], str | None]:
        cursor = start_from or None
        try:
            if cursor is not None:
                decode_schedule_cursor(cursor)
            page = await self._io(self._store.list, app_id, cursor, limit)
        except ValidationError:
            raise  # a stored timing this version cannot read: not the client's cursor
        except ValueError:
            raise ApiError(400, "invalid_cursor", "startFrom is not a cursor of this API") from None
        return list(page.items), page.next_cursor

    async def update(self, app_id: str, schedule_id: str, raw: Any) -> Schedule:
        """Raises ValidationError for a bad body. Keeps created_ms, paused and the cursor (the
        stored ones, also when they change meanwhile)."""
        current = await self.get(app_id, schedule_id)
        draft = self._parse(raw, current.recurrence.start_ms, creating=False)
        updated = dataclasses.replace(
            current,
            recurrence=draft.recurrence,
            payload_json=draft.payload_json,
            kafka_key=draft.kafka_key,
            flexible_window_ms=draft.flexible_window_ms,
            updated_ms=self._clock.now_ms(),
        )
        # Not `put`: a pause that lands after the read above must stay.
        await self._io(self._store.update_definition, updated)
        return updated

    async def pause(self, app_id: str, schedule_id: str) -> Schedule:
        current = await self.get(app_id, schedule_id)
        now = self._clock.now_ms()
        await self._io(self._store.set_paused, app_id, schedule_id, True, now)
        paused = await self.get(app_id, schedule_id)  # deleted meanwhile: the delete aborts
        if paused.paused:  # else a resume issued later (another replica's clock) won: it runs
            # A repeated pause (e.g. a retry after a 503) aborts again but counts pending once.
            await self._stop(paused, now, PAUSED, not current.paused)
        return paused

    async def resume(self, app_id: str, schedule_id: str) -> Schedule:
        """Clears the flag, then brings back the occurrences the pause aborted (those still
        ahead, and what the catch-up policy keeps of those that came due meanwhile), then reads
        the schedule again: paused again by then, it aborts what it brought back, as a tick
        that raced a pause does (whichever of the two reads second sees the other's write)."""
        await self.get(app_id, schedule_id)
        now = self._clock.now_ms()
        await self._io(self._store.set_paused, app_id, schedule_id, False, now)
        resumed = await self.get(app_id, schedule_id)
        if resumed.paused:
            return resumed  # a pause issued later won
        revived = await self._messages.revive_occurrences(resumed, now)
        if not revived:
            return resumed
        log.info(
            "schedule %s/%s: resumed; %d occurrence(s) its pause aborted brought back",
            app_id,
            schedule_id,
            revived,
        )
        again = await self.get(app_id, schedule_id)
        if again.paused:
            await self._stop(again, self._clock.now_ms(), PAUSED, True)
        return again

    async def delete(self, app_id: str, schedule_id: str) -> None:
        """Stops it as a pause does, then marks it deleted: if the aborts fail (503), the
        schedule stays, paused, and a repeated DELETE does it all again (once deleted, nothing
        would redo them)."""
        current = await self.get(app_id, schedule_id)
        now = self._clock.now_ms()
        await self._io(self._store.set_paused, app_id, schedule_id, True, now)
        stopped = await self.get(app_id, schedule_id)  # the cursor, fresh after the write
        # Those of a paused schedule were aborted by its pause: abort again, count once.
        await self._stop(stopped, now, DELETED, not current.paused)
        await self._io(self._store.delete, app_id, schedule_id, now)

    async def _stop(self, schedule: Schedule, now: int, why: str, move_pending: bool) -> None:
        """Abort the occurrences the runner created ahead (up to the cursor just read), except
        those within the cancel guard: they are left to be delivered."""
        aborted = await self._messages.stop_occurrences(
            schedule, now, why, move_pending=move_pending
        )
        if aborted:
            log.info(
                "schedule %s/%s: %s; %d occurrence(s) created ahead aborted",
                schedule.app_id,
                schedule.schedule_id,
                why,
                aborted,
            )
