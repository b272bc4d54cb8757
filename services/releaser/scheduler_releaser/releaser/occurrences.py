"""The occurrence runner: turns recurring schedules into ordinary messages (docs/SCHEDULES.md,
"When occurrences are created").

It runs in the releasing leader, in its own thread, once per `SCHEDULER_RELEASE_SCHEDULE_TICK_MS`.
A tick takes the schedules that may have an occurrence to create (`due_schedules`: a wake-up
instant per schedule, the changes others made, a full pass now and then) and, for each:

1. plans the tick (`plan_tick`): the due occurrences the catch-up policy keeps and the upcoming
   ones within the look-ahead, each as a ScheduleRequest whose id derives from (app, schedule,
   instant), published to the requests topic like a Kafka-native producer's;
2. after Kafka acknowledged all of them, stores the schedule's cursor (never before: a crash in
   between repeats the tick under the same ids, one message each; the bucketer and the
   dispatcher treat a second copy like a replay);
3. reads the schedule again and, if it was paused or deleted meanwhile, aborts what it created
   ahead. A pause or delete route writes its flag first and then aborts up to the cursor it reads
   afterwards: whichever of the two reads second sees the other's write, so an occurrence created
   by a tick that raced the pause is aborted by one of them.

Two leaders at once (a frozen one resuming) create the same ids and the cursor keeps the
highest value, so no fencing is needed here.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from scheduler.clock import Clock
from scheduler.codec import RecordCodec, registry_client, value_subject
from scheduler.domain.errors import ValidationError
from scheduler.domain.occurrences import Tick, plan_tick
from scheduler.domain.validation import validate_schedule_request
from scheduler.kafka.producer import RecordProducer
from scheduler.records import Command, ScheduleRequest
from scheduler.schedule_occurrences import (
    DELETED,
    PAUSED,
    abort_created_ahead,
    occurrence_request,
)
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import MessageStore, Schedule, ScheduleStore, ScheduleTiming
from scheduler.store.usage import UsageStore
from scheduler.topics import Topics
from scheduler_releaser.metrics import OccurrenceMetrics
from scheduler_releaser.releaser.due_schedules import (
    RESCAN_ROWS_PER_TICK,
    ChangeFeed,
    DueIndex,
    Key,
    wake_ms,
)

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _Planned:
    schedule: Schedule
    tick: Tick
    requests: Sequence[ScheduleRequest]


class OccurrenceRunner:
    def __init__(
        self,
        *,
        schedules: ScheduleStore,
        messages: MessageStore,
        usage: UsageStore,
        producer: RecordProducer,
        requests: RecordCodec[ScheduleRequest],
        commands: RecordCodec[Command],
        topics: Topics,
        scheduling: SchedulingSettings,
        clock: Clock,
        metrics: OccurrenceMetrics,
        lookahead_ms: int,
        limit: int,
        rescan_ms: int,
    ) -> None:
        self._schedules = schedules
        self._messages = messages
        self._usage = usage
        self._producer = producer
        self._requests = requests
        self._commands = commands
        self._topics = topics
        self._scheduling = scheduling
        self._clock = clock
        self._metrics = metrics
        self._lookahead_ms = lookahead_ms
        self._limit = limit
        # Stopped schedules whose abort failed: tried again at the next ticks (a paused or
        # deleted schedule is not planned again, so nothing else would).
        self._to_abort: dict[tuple[str, str], Schedule] = {}
        self._rescan_ms = rescan_ms
        self._index = DueIndex()
        self._changes = ChangeFeed(schedules)
        self._rescan_at: int | None = None  # None: a full pass at the next tick
        self._rescan: Iterator[ScheduleTiming] | None = None  # a full pass going on, a page a tick

    def forget(self) -> None:
        """Not leading: another runner may change cursors meanwhile; start over when leading."""
        self._index.clear()
        self._rescan_at, self._rescan = None, None

    def tick(self) -> int:
        """One pass over the schedules that are due; returns the occurrences published. Raises
        on a Kafka or Cassandra failure: no cursor moved past anything unacknowledged, and the
        schedules of the tick are looked at again at the next."""
        with self._metrics.duration.time():
            for key, stopped in list(self._to_abort.items()):
                self._abort_created_ahead(stopped)
                del self._to_abort[key]
            now = self._clock.now_ms()
            try:
                self._refresh(now)
            except BaseException:
                self._rescan_at = None  # a change may have gone unread: every schedule next
                raise
            due = self._index.pop_due(now)
            try:
                schedules = list(self._read(due).values())
                planned = [p for s in schedules if (p := self._plan(s, now))]
                created = self._create(planned)
            except BaseException:
                for key in due:
                    self._index.set(key, now)
                raise
            cursors = {
                (p.schedule.app_id, p.schedule.schedule_id): p.tick.cursor_ms for p in planned
            }
            for s in schedules:
                key = (s.app_id, s.schedule_id)
                after = dataclasses.replace(s, cursor_ms=cursors.get(key, s.cursor_ms))
                wake = wake_ms(after, now, self._lookahead_ms)
                # a schedule whose tick created nothing and is still due: the next tick
                self._index.set(key, None if wake is None else max(wake, now + 1))
            return created

    def _refresh(self, now: int) -> None:
        """Learn what changed: every schedule at the first tick when leading; then the
        schedules others changed since the last tick, and a page of a full pass every
        `rescan_ms`."""
        if self._rescan_at is None:
            self._changes.restart(now)
            self._index.clear()
            self._rescan = None
            started = time.monotonic()
            for s in self._schedules.scan_timings():
                self._index.set((s.app_id, s.schedule_id), wake_ms(s, now, self._lookahead_ms))
            self._rescan_at = now + self._rescan_ms
            log.info(
                "occurrence runner: read every schedule in %.1f s; %d to wake up",
                time.monotonic() - started,
                len(self._index),
            )
        elif now >= self._rescan_at and self._rescan is None:
            self._rescan = iter(self._schedules.scan_timings())
            self._rescan_at = now + self._rescan_ms
        if self._rescan is not None:
            read = 0
            for s in itertools.islice(self._rescan, RESCAN_ROWS_PER_TICK):
                read += 1
                wake = wake_ms(s, now, self._lookahead_ms)
                self._index.set_earlier((s.app_id, s.schedule_id), wake)
            if read < RESCAN_ROWS_PER_TICK:
                self._rescan = None
        changed = self._changes.poll(now)
        found = self._read(list(changed))  # one read per application, as for the due ones
        for key in changed:
            fresh = found.get(key)
            wake = None if fresh is None else wake_ms(fresh, now, self._lookahead_ms)
            self._index.set(key, wake)

    def _create(self, planned: list[_Planned]) -> int:
        """Publish the planned occurrences, then store the cursors, then abort what a pause
        or delete that raced the tick stopped."""
        if not planned:
            return 0
        for p in planned:
            for request in p.requests:
                self._producer.produce(
                    self._topics.requests,
                    request.app_id.encode(),
                    self._requests.encode(request),
                )
        self._producer.flush(FLUSH_TIMEOUT_S)
        created = sum(len(p.requests) for p in planned)
        self._metrics.created.inc(created)
        cursors: dict[str, dict[str, int]] = defaultdict(dict)
        for p in planned:
            assert p.tick.cursor_ms is not None
            cursors[p.schedule.app_id][p.schedule.schedule_id] = p.tick.cursor_ms
        for app_id, by_id in cursors.items():
            self._schedules.advance_cursors(app_id, by_id)
        fresh = self._read([(p.schedule.app_id, p.schedule.schedule_id) for p in planned])
        for p in planned:
            self._abort_if_stopped(p, fresh.get((p.schedule.app_id, p.schedule.schedule_id)))
        return created

    def _read(self, keys: Sequence[Key]) -> dict[Key, Schedule]:
        """The schedules of `keys` that exist, one read per application."""
        by_app: dict[str, list[str]] = defaultdict(list)
        for app_id, schedule_id in keys:
            by_app[app_id].append(schedule_id)
        found: dict[Key, Schedule] = {}
        for app_id, ids in by_app.items():
            for schedule_id, s in self._schedules.get_many(app_id, ids).items():
                found[(app_id, schedule_id)] = s
        return found

    def _plan(self, schedule: Schedule, now: int) -> _Planned | None:
        if schedule.paused:
            return None
        try:
            tick = plan_tick(
                schedule.recurrence,
                schedule.cursor_ms,
                now,
                paused=False,
                lookahead_ms=self._lookahead_ms,
                limit=self._limit,
            )
        except Exception:  # one broken schedule must not stop the others
            log.exception("schedule %s/%s: tick not planned", schedule.app_id, schedule.schedule_id)
            return None
        if tick.skipped:
            self._metrics.skipped.inc()
        if tick.cursor_ms is None or tick.cursor_ms == schedule.cursor_ms:
            return None
        requests = []
        for instant in tick.create:
            request = occurrence_request(schedule, instant, now)
            oldest = now - self._scheduling.past_window_ms
            if instant < oldest:
                # A missed occurrence older than any request may be (a long outage, a weekly
                # schedule's latest): delivered now, under its own id, rather than refused.
                request = dataclasses.replace(request, send_at_ms=oldest)
            try:
                validate_schedule_request(request, self._scheduling)
            except ValidationError as exc:
                # It would be refused downstream, now and at every later tick: count and go on.
                self._metrics.invalid.inc()
                log.warning(
                    "schedule %s/%s: occurrence at %d not created: %s",
                    schedule.app_id,
                    schedule.schedule_id,
                    instant,
                    exc,
                )
                continue
            requests.append(request)
        return _Planned(schedule, tick, requests)

    def _abort_if_stopped(self, planned: _Planned, fresh: Schedule | None) -> None:
        """`fresh`: the schedule read again after the cursor was stored."""
        schedule = planned.schedule
        if fresh is not None and fresh.deleted_ms is None and not fresh.paused:
            return
        stopped = fresh or dataclasses.replace(schedule, deleted_ms=self._clock.now_ms())
        # The cursor this tick stored, even if the read came from a replica without it yet.
        cursor = max(stopped.cursor_ms or 0, planned.tick.cursor_ms or 0)
        stopped = dataclasses.replace(stopped, cursor_ms=cursor)
        try:
            self._abort_created_ahead(stopped)
        except Exception:
            self._to_abort[(schedule.app_id, schedule.schedule_id)] = stopped
            raise

    def _abort_created_ahead(self, stopped: Schedule) -> None:
        now = self._clock.now_ms()
        why = DELETED if stopped.deleted_ms is not None else PAUSED
        guard = self._scheduling.cancel_guard_ms
        writes, commands = abort_created_ahead(stopped, self._messages, now, guard, why)
        if not writes:
            return
        self._messages.update_statuses(writes)
        for command in commands:
            self._producer.produce(
                self._topics.commands, command.message_id.encode(), self._commands.encode(command)
            )
        self._producer.flush(FLUSH_TIMEOUT_S)
        self._usage.add_pending(stopped.app_id, -len(writes))
        self._metrics.aborted.inc(len(writes))
        log.info(
            "schedule %s/%s: %s during a tick; %d occurrence(s) created ahead aborted",
            stopped.app_id,
            stopped.schedule_id,
            why,
            len(writes),
        )


def topic_codecs(
    kafka: KafkaSettings, topics: Topics
) -> tuple[RecordCodec[ScheduleRequest], RecordCodec[Command]]:
    """The requests and commands codecs, with the subjects ingest uses for those topics."""
    if not kafka.schema_registry_url:
        return RecordCodec(ScheduleRequest), RecordCodec(Command)
    registry = registry_client(kafka.schema_registry_url)
    return (
        RecordCodec(ScheduleRequest, registry=registry, subject=value_subject(topics.requests)),
        RecordCodec(Command, registry=registry, subject=value_subject(topics.commands)),
    )


def run_while_leading(
    runner: OccurrenceRunner,
    is_leader: Callable[[], bool],
    stop: threading.Event,
    tick_s: float,
    failures: Counter,
) -> None:
    """The runner thread: a tick every `tick_s` while this replica leads, until `stop`."""
    while not stop.wait(tick_s):
        if not is_leader():
            runner.forget()
            continue
        try:
            runner.tick()
        except Exception:
            failures.inc()
            log.exception("occurrence tick failed; the next tick repeats it")
