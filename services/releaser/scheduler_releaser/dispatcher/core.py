"""The dispatcher core: hold due messages, fire each at its due instant, settle the attempt.

    ring record -> accept() -> TimerQueue -> (due) -> fire(): abort view + record + app check
        REST  -> HTTP POST -> settle: SENT | RETRY (reschedule) | FAILED (+ dead letter)
        KAFKA -> destination record
    -> Sink.emit(destination?, result, retry?, dead letter?, settled offset)   (one transaction)

No Kafka here: the runtime feeds `accept()` and implements the Sink; tests use fakes and a
ManualClock and call `fire_due()` directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from scheduler.clock import Clock
from scheduler.domain.backoff import Backoff
from scheduler.domain.buckets import bucket_start, shard_of
from scheduler.domain.placement import Placement, claimed, place
from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.records import DeliveryResult, DueMessage
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.ports import Application, BucketStore, StatusUpdate
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.metrics import DispatchMetrics
from scheduler_releaser.settings import DispatchSettings

from .admission import Admission, Parked
from .apps import AppCache
from .commands import ABORTS_KEPT_CYCLES, NEVER, CommandView
from .ports import OutRecord, RecordsCoverage, Sink, TopicCheck
from .refusals import Refusal
from .rest import HEADER_DUE, HEADER_MESSAGE_ID, RestDeliverer
from .status_reader import StatusReader
from .timers import PARKED_HEADER, Held, Position, TimerQueue
from .verdict import (
    AttemptKind,
    AttemptOutcome,
    Settlement,
    Verdict,
    age_start_ms,
    dispatch_delay_ms,
    expired,
    fire_check,
    lateness_ms,
    settle,
    skipped,
)

log = logging.getLogger(__name__)
READ_BATCH = 100  # records read per query at fire time
PRODUCED = AttemptOutcome(AttemptKind.SENT, "produced")


def _not_allowed(kind: AttemptKind, error: str) -> AttemptOutcome:
    return AttemptOutcome(kind, "refused_topic", error=error)


class Dispatcher:
    def __init__(
        self,
        *,
        clock: Clock,
        kafka: KafkaSettings,
        scheduling: SchedulingSettings,
        settings: DispatchSettings,
        states: StatusReader,
        buckets: BucketStore,
        apps: AppCache,
        commands: CommandView,
        rest: RestDeliverer,
        topic_check: TopicCheck,
        sink: Sink,
        codecs: Codecs,
        metrics: DispatchMetrics,
        records: RecordsCoverage,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        reads: Executor | None = None,
    ) -> None:
        self._clock = clock
        self._kafka = kafka
        self._scheduling = scheduling
        self._settings = settings
        self._topics = Topics(kafka, scheduling)
        self._states = states
        self._buckets = buckets
        self._apps = apps
        self.commands = commands
        self._rest = rest
        self._topic_check = topic_check
        self._sink = sink
        self._codecs = codecs
        self._metrics = metrics
        self._records = records
        # Resolved once: labels() costs more than the delivery's own work under a hotspot.
        self._kafka_sent = metrics.attempts.labels("KAFKA", "sent", "produced")
        self._kafka_lateness = metrics.lateness.labels("KAFKA")
        self._kafka_delay = metrics.delay.labels("KAFKA")
        # KAFKA deliveries committed and not yet in app_attempts: counted once per transaction
        # (an AppCounter increment ranks the app under two locks, 4 us, per message otherwise).
        self._kafka_sent_per_app: dict[str, int] = {}
        if settings.kafka_produce_ahead_ms >= scheduling.cancel_guard_ms:
            raise ValueError("DISPATCH_KAFKA_PRODUCE_AHEAD_MS must be below the cancel guard")
        if 2 * settings.park_after_ms > kafka.due_retention_ms:
            # a parked copy must be read (and parked again) well within the ring's retention
            raise ValueError(
                "DISPATCH_PARK_AFTER_MS must be at most half of KAFKA_DUE_RETENTION_MS"
            )
        self._backoff: Backoff = settings.backoff()
        self.timers = TimerQueue()
        # From these instants on the timer queue knows every settled attempt of this instance's
        # ring partitions (a restart's reload of results, then its own settlements) and the
        # commands view every abort: an attempt they cover needs no record read ("Late
        # duplicates"). None: the queue vouches for nothing.
        self._settled_known_since: int | None = None
        self._aborts_known_since = NEVER
        self._ring_repartitioned = False
        self._records_read = metrics.record_checks.labels("read")
        self._records_known = metrics.record_checks.labels("known")
        self.stopping = False  # set on shutdown: tasks not yet delivering give up
        self._sleep = sleep
        # Record reads run here, not in the loop's default executor (shared with the sink).
        self._reads = reads or ThreadPoolExecutor(
            max_workers=settings.store_threads, thread_name_prefix="record-read"
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # Read when scraped: a value set on spawn stayed stale once the tasks were done.
        self._metrics.in_flight.set_function(lambda: len(self._tasks))
        self.admission = Admission(
            apps,
            clock,
            settings.instances,
            lambda: self.stopping,
            settings.park_after_ms,
            sleep,
            metrics.admission_waiting.set,
            metrics.admission_oldest_wait.set,
        )
        # Topics that refused a record transiently -> until when they are not produced to.
        # Producing to them again at once would hold every other tenant's transaction for the
        # destination timeout again.
        self._quarantine: dict[str, int] = {}

    def know_since(self, settled_ms: int, aborts_ms: int) -> None:
        """The timer queue holds every attempt settled since `settled_ms` (the results reload)
        and the commands view every abort issued since `aborts_ms` (where it started reading,
        less the pruning: ABORTS_KEPT_CYCLES). Ignored once the ring's partitions changed."""
        if not self._ring_repartitioned:
            self._settled_known_since = settled_ms
            self._aborts_known_since = aborts_ms

    def ring_repartitioned(self) -> None:
        """The ring's partition count changed: a copy of an attempt may now land on another
        partition than its first copy, one another instance owns and settles, so the timer
        queue vouches for nothing until this process restarts (every attempt reads its record)."""
        self._ring_repartitioned = True
        self._settled_known_since = None

    def _needs_record(self, message: DueMessage, now_ms: int) -> bool:
        """Must the record be read before firing, or do the timer queue and the commands view
        already know everything it could show ("Late duplicates")?

        - A settled earlier copy: it left its result when it fired, at most the produce-ahead
          before its due instant (a host's clock may be a slack behind), and the queue forgets
          settled attempts due more than the dedup window ago.
        - An abort: issued after the message was created; the view keeps aborts for
          ABORTS_KEPT_CYCLES ring cycles. An older abort whose command is pruned is honoured
          by the record alone (one that missed its stored row: services/bucketer/README.md)."""
        settled_since = self._settled_known_since
        if settled_since is None or message.due_ms < now_ms - self._settings.dedup_window_ms:
            return True
        slack = self._settings.results_slack_ms
        if message.due_ms - self._settings.kafka_produce_ahead_ms - slack < settled_since:
            return True
        aborts_since = max(
            self._aborts_known_since, now_ms - ABORTS_KEPT_CYCLES * self._topics.ring.cycle_ms
        )
        return not aborts_since <= message.created_ms - slack <= now_ms

    # -- intake ---------------------------------------------------------------------------

    def accept(
        self,
        message: DueMessage,
        position: Position | None,
        parked_uncounted_ms: int | None = None,
    ) -> None:
        """A DueMessage read from the ring: hold it, or settle it at once if it is a duplicate.
        `parked_uncounted_ms`: the record is the copy of a parked attempt (timers.PARKED_HEADER)."""
        if not self.timers.push(message, position, parked_uncounted_ms):
            self._metrics.duplicates.inc()
            if position is not None:
                self._sink.emit([], position)
            return
        self._metrics.held.set(len(self.timers))

    # -- firing ---------------------------------------------------------------------------

    def may_fire(self, now_ms: int, ahead_ms: int = 0) -> bool:
        """Decision 5: do not fire while the view of commands lags more than the guard.

        Firing `ahead_ms` before the due instant asks as much more of the view, so it is as
        current as a view within the guard at the due instant itself."""
        lag = self.commands.lag_ms(now_ms)
        self._metrics.commands_lag.set(lag / 1000.0)
        return lag + ahead_ms <= self._scheduling.cancel_guard_ms

    def start_due(self, limit: int | None = None) -> int:
        """Start firing every held message that is due. Returns how many."""
        now = self._clock.now_ms()
        # Started a little early (prefetch) so the record and app reads are done by the due
        # instant; each message then waits for its own due instant before it is delivered.
        # (never less than the KAFKA produce-ahead: those fire that early)
        lead = max(self._settings.prefetch_ms, self._settings.kafka_produce_ahead_ms)
        head = self.timers.next_due_ms()
        # Nothing due: the view's lag does not matter now (a quiet dispatcher lets it age,
        # pace.py), so it is not asked, and the gauge keeps the lag of the last question.
        if head is None or head > now + lead or not self.may_fire(now):
            return 0
        due = self.timers.pop_due(now + lead, limit)
        by_app: dict[str, list[Held]] = {}
        for held in due:
            by_app.setdefault(held.message.app_id, []).append(held)
        for helds in by_app.values():
            for start in range(0, len(helds), READ_BATCH):
                self._spawn(self._fire_batch(helds[start : start + READ_BATCH]))
        self._metrics.held.set(len(self.timers))
        return len(due)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fire_due(self) -> int:
        """Start every due message and wait until they are settled (tests, shutdown)."""
        started = self.start_due()
        await self.drain()
        return started

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _fire_batch(self, helds: list[Held]) -> None:
        """One record read for up to READ_BATCH messages of one app (those `_needs_record`
        names), then one task each."""
        app_id = helds[0].message.app_id
        now = self._clock.now_ms()
        unknown = [h for h in helds if self._needs_record(h.message, now)]
        self._records_known.inc(len(helds) - len(unknown))
        if any(h.message.due_ms < now - self._settings.dedup_window_ms for h in unknown):
            # Past the dedup window only the record tells a settled duplicate: wait until it
            # holds every result committed so far (records_progress.py).
            while self._records.covers_ms < now:
                if self.stopping:
                    return  # not fired: left unsettled (read again after the restart)
                await self._sleep(0.05)
        try:
            states = await self._read_states(app_id, [h.message.message_id for h in unknown])
            # Inside the try: a failed app read (Cassandra, or a secret this replica's keyring
            # cannot decrypt) must hand the attempts back, not drop them from the timers.
            app = await self._apps.get(app_id)
        except Exception:
            log.exception(
                "reading %d records or the app of %s failed; retrying them", len(helds), app_id
            )
            await self._hand_back(helds)
            return
        if app is not None and app.type == "KAFKA" and self.admission.open(app):
            # Nothing to wait for but the due instants: fired in due order within this task
            # (a task per message costs more than the delivery itself under a hotspot). Not
            # for an app that holds its messages back: each must wait, and park, on its own.
            await self._fire_kafka_run(app_id, helds, states)
            return
        for held in helds:  # REST (each waits for its own response), or waiting for its app
            self._spawn(self.fire(held, states.get(held.message.message_id)))

    async def _fire_kafka_run(
        self, app_id: str, helds: list[Held], states: dict[str, StatusUpdate]
    ) -> None:
        """A KAFKA app's batch, in due order: the checks that concern the app (its admission,
        its topic, the view's lag) are made once for every message whose fire instant has
        come, then each is produced without an await. A message out of the plain case (an
        abort, a skip, too old) goes through `fire`, the path of a single message, which
        settles it as such; once the app is held back (paused, rate limited, its topic refused
        or quarantined, changed or gone) each of the rest does, in a task of its own: each
        waits, and parks, on its own."""
        ahead = self._settings.kafka_produce_ahead_ms
        pending = sorted(helds, key=lambda h: (h.due_ms, h.message_id))
        start = 0
        while start < len(pending):
            await self._until(pending[start].due_ms - ahead, ahead)
            if self.stopping:
                return  # not fired: left unsettled (their offsets are not committed)
            try:
                app = await self._apps.get(app_id)
                plain = (
                    app is not None
                    and app.type == "KAFKA"
                    and self.admission.open(app)
                    and self._quarantine_end(app.endpoint) is None
                    and await self._refuse_topic(app.endpoint) is None
                )
            except Exception:
                # Cassandra down, the producer's metadata failing (Kafka restarting, a fenced
                # producer): the attempts go back to the timer queue, never dropped.
                log.exception(
                    "reading the app %s or its topic failed; retrying %d attempts",
                    app_id,
                    len(pending) - start,
                )
                await self._hand_back(pending[start:])
                return
            if app is None or not plain:
                for held in pending[start:]:
                    self._spawn(self.fire(held, states.get(held.message.message_id)))
                return
            now = self._clock.now_ms()
            if not self.may_fire(now, ahead):
                continue  # (_until waits for the view again)
            end = start
            while end < len(pending) and pending[end].due_ms - ahead <= now:
                end += 1
            for held in pending[start:end]:  # all due: fired even if stopping meanwhile
                state = states.get(held.message.message_id)
                try:
                    fired = self._fire_plain_kafka(app, held, state, now)
                except Exception:
                    log.exception("firing %s failed; rescheduling it", held.message.message_id)
                    await self._hand_back([held])
                    continue
                if not fired:
                    await self.fire(held, state)
            start = end

    def _fire_plain_kafka(
        self, app: Application, held: Held, state: StatusUpdate | None, now_ms: int
    ) -> bool:
        """Produce one KAFKA delivery whose app and topic were checked at `now_ms`, if nothing
        but its due instant stood in its way: not aborted, not skipped, not too old. False:
        left untouched, for `fire`."""
        message = held.message
        aborted = self.commands.aborted(message.app_id, message.message_id, message.generation)
        if fire_check(message, state, app, aborted) is not Verdict.FIRE:
            return False
        if expired(message, app.policy, now_ms, held.uncounted_ms) is not None:
            return False
        fire_at = message.due_ms - self._settings.kafka_produce_ahead_ms
        if now_ms < fire_at:  # unreachable by construction; the guarantee is checked anyway
            raise AssertionError(f"{message.message_id} would fire early")
        self._metrics.fire_delay.observe((now_ms - fire_at) / 1000)
        self._produce_kafka(app, message, held.position, now_ms)
        self.timers.done(message)
        return True

    async def _read_states(self, app_id: str, ids: list[str]) -> dict[str, StatusUpdate]:
        if not ids:
            return {}
        self._records_read.inc(len(ids))
        started = self._clock.monotonic_ms()
        states = await asyncio.get_running_loop().run_in_executor(
            self._reads, self._states.states, app_id, ids
        )
        self._metrics.record_read.observe((self._clock.monotonic_ms() - started) / 1000)
        return states

    async def _hand_back(self, helds: list[Held]) -> None:
        # Hand the attempts back to the timer queue unchanged, so they are retried (dedup lets
        # them through: their keys are forgotten first). Never lose one.
        await self._sleep(0.1)
        for held in helds:
            self.timers.forget(held.message)
            self.accept(held.message, held.position, held.uncounted_ms or None)

    async def fire(self, held: Held, state: StatusUpdate | None) -> None:
        try:
            await self._fire(held, state)
        except Exception:
            log.exception("firing %s failed; rescheduling it", held.message.message_id)
            await self._hand_back([held])
        else:
            self.timers.done(held.message)

    async def _fire(self, held: Held, state: StatusUpdate | None) -> None:
        message, position = held.message, held.position
        app = await self._apps.get(message.app_id)
        # A KAFKA delivery is produced a little ahead, into a transaction the sink commits only
        # once the record is due: its round trips are then done by the due instant.
        ahead = self._settings.kafka_produce_ahead_ms if app and app.type == "KAFKA" else 0
        fire_at = message.due_ms - ahead
        await self._until(fire_at, ahead)
        if self.stopping:
            return  # not fired: left unsettled (its offset is not committed)
        uncounted_ms = held.uncounted_ms
        if app is not None:  # its pause and rate limit (admission.py)
            admitted = await self.admission.admit(app, uncounted_ms)
            if admitted is None or self.stopping:
                return  # not fired: left unsettled
            if isinstance(admitted, Parked):
                self._park(message, position, uncounted_ms + admitted.uncounted_ms)
                return
            app, uncounted_ms = admitted.app, uncounted_ms + admitted.uncounted_ms
        if app is not None and app.type == "KAFKA":
            topic_ready = await self._wait_for_topic(app.endpoint)
            if topic_ready is None:
                return  # shutting down: not fired, left unsettled
            if not topic_ready:
                self._park(message, position, uncounted_ms)
                return
        # The abort view is consulted at the fire instant itself (the record was read up to
        # prefetch_ms earlier; decision 5 makes the commands view the authority at fire time).
        aborted = self.commands.aborted(message.app_id, message.message_id, message.generation)
        verdict = fire_check(message, state, app, aborted)
        now = self._clock.now_ms()
        if verdict is not Verdict.FIRE or app is None:
            self._metrics.skipped.labels(verdict.value).inc()
            result = skipped(message, verdict, now)
            self._sink.emit([self._result_record(result)], position)
            return
        if now < fire_at:  # unreachable by construction; the guarantee is checked anyway
            raise AssertionError(f"{message.message_id} would fire early")
        self._metrics.fire_delay.observe((now - fire_at) / 1000)
        too_old = expired(message, app.policy, now, uncounted_ms)
        if too_old is not None:
            await self._settle_unsent(app, message, position, too_old)
            return
        if app.type == "KAFKA":
            await self._fire_kafka(app, message, position)
        else:
            await self._fire_rest(app, message, position)

    def _park(self, message: DueMessage, position: Position | None, uncounted_ms: int) -> None:
        """The attempt waited for its app past the park bound (admission.py): a copy goes into
        the ring's current slot, marked with what it waited uncounted, in the transaction that
        commits its offset. Its copy is let in once (timers.py) and waits again."""
        now = self._clock.now_ms()
        copy = OutRecord(
            topic=self._topics.ring.topic_for_send(message.due_ms, now),
            key=message.message_id.encode(),
            value=self._codecs.due.encode(message),
            headers=((PARKED_HEADER, str(uncounted_ms).encode()),),
        )
        self.timers.park(message)
        self._metrics.parked.inc()
        self._sink.emit([copy], position)

    async def _wait_for_topic(self, topic: str) -> bool | None:
        """A topic that refused a record transiently (`refused` in _fire_kafka) is not produced
        to until its quarantine ends: the delivery waits for that, spending no attempt, since
        it is not tried (spending them let one refusal fail every delivery due in the window).
        The wait counts toward the max event age, as any lateness does. False: the topic is
        still quarantined after park_after_ms (the caller parks the delivery); None: shutdown."""
        give_up = self._clock.now_ms() + self._settings.park_after_ms
        counted = False
        while True:
            if self.stopping:
                return None
            until = self._quarantine_end(topic)
            if until is None:
                return True
            if not counted:
                self._metrics.destination_waits.inc()
                counted = True
            if until > give_up:
                await self._until(give_up, 0)
                return False
            await self._until(until, 0)

    def _quarantine_end(self, topic: str) -> int | None:
        until = self._quarantine.get(topic)
        if until is None:
            return None
        if self._clock.now_ms() < until:
            return until
        del self._quarantine[topic]
        return None

    async def _until(self, fire_at_ms: int, ahead_ms: int) -> None:
        """Never early: wait for the fire instant by this host's clock, and while the view of
        commands lags more than the guard (decision 5). Returns at once on shutdown (the view
        is no longer polled then; the caller leaves the attempt unsettled)."""
        while not self.stopping:
            now = self._clock.now_ms()
            if now < fire_at_ms:
                await self._sleep((fire_at_ms - now) / 1000)
            elif not self.may_fire(now, ahead_ms):
                await self._sleep(0.001)
            else:
                return

    async def _fire_rest(self, app: Application, message: DueMessage, pos: Position | None) -> None:
        outcome = await self._rest.deliver(app, message, lambda: self.stopping)
        if outcome is None:
            return  # shutting down before it was sent: left unsettled, read again on restart
        now = self._clock.now_ms()
        settlement = settle(message, outcome, now, *self._retry_policy(app, message))
        self._observe("REST", message, outcome, settlement)
        records = await self._settlement_records(settlement, now, app.shards)
        self._sink.emit(records, pos)

    async def _fire_kafka(
        self, app: Application, message: DueMessage, pos: Position | None
    ) -> None:
        blocked = await self._refuse_topic(app.endpoint)
        if blocked is not None:
            await self._settle_unsent(app, message, pos, blocked)
            return
        self._produce_kafka(app, message, pos, self._clock.now_ms())

    def _count_kafka_sent(self, app_id: str) -> None:
        sent = self._kafka_sent_per_app
        if not sent:  # the sink calls every commit callback of a transaction in one go
            asyncio.get_running_loop().call_soon(self._account_kafka_sent)
        sent[app_id] = sent.get(app_id, 0) + 1

    def _account_kafka_sent(self) -> None:
        sent, self._kafka_sent_per_app = self._kafka_sent_per_app, {}
        for app_id, n in sent.items():
            self._metrics.app_attempts.inc(app_id, "sent", n=n)

    def _produce_kafka(
        self, app: Application, message: DueMessage, pos: Position | None, now: int
    ) -> None:
        key = (message.kafka_key or message.message_id).encode()
        destination = OutRecord(
            topic=app.endpoint,
            key=key,
            value=message.payload_json.encode(),
            headers=(
                (HEADER_MESSAGE_ID, message.message_id.encode()),
                (HEADER_DUE, format_rfc3339_ms(message.due_ms).encode()),
            ),
            destination=True,
        )
        # Delivered when its transaction commits, which is never before the due instant.
        settlement = settle(message, PRODUCED, max(now, message.due_ms), self._backoff)

        def committed(at_ms: int) -> None:
            # A Kafka delivery happens when its transaction commits.
            self._kafka_sent.inc()
            self._count_kafka_sent(message.app_id)
            self._kafka_lateness.observe(lateness_ms(message, at_ms) / 1000.0)
            self._kafka_delay.observe(dispatch_delay_ms(message, at_ms) / 1000.0)

        def refused(refusal: Refusal) -> None:
            # The destination refused the record alone (sink.py): settle this attempt anew.
            if refusal.topic_gone:
                self._topic_check.forget(app.endpoint)
            if not refusal.permanent:
                self._quarantine[app.endpoint] = (
                    self._clock.now_ms() + self._settings.destination_quarantine_ms
                )
            outcome = AttemptOutcome(
                AttemptKind.PERMANENT if refusal.permanent else AttemptKind.RETRYABLE,
                refusal.code.lower(),
                error=f"topic {app.endpoint!r} refused the record: {refusal.code}"
                f" ({refusal.detail})",
            )
            self._spawn(self._settle_unsent(app, message, pos, outcome))

        self._sink.emit(
            [destination, self._result_record(settlement.result)],
            pos,
            committed,
            not_before_ms=message.due_ms,
            on_refused=refused,
        )

    async def _settle_unsent(
        self, app: Application, message: DueMessage, pos: Position | None, outcome: AttemptOutcome
    ) -> None:
        """An attempt that ended without a delivery (no destination record in the transaction,
        no request made): a refused topic, or a message past its app's maxEventAgeMs."""
        while True:
            now = self._clock.now_ms()
            settlement = settle(message, outcome, now, *self._retry_policy(app, message))
            try:
                records = await self._settlement_records(settlement, now, app.shards)
            except Exception:  # the retry's placement (Cassandra): never leave it unsettled
                if self.stopping:
                    return  # unsettled: read again after the restart
                log.exception("settling %s failed; trying again", message.message_id)
                await self._sleep(1.0)
                continue
            self._observe(app.type, message, outcome, settlement)
            self._sink.emit(records, pos)
            return

    def _retry_policy(self, app: Application, message: DueMessage) -> tuple[Backoff, int | None]:
        """The app's retry schedule, and the instant after which no attempt is made."""
        policy = app.policy
        give_up = None
        if policy.max_event_age_ms is not None:
            give_up = age_start_ms(message) + policy.max_event_age_ms
        return policy.backoff(self._backoff), give_up

    async def _refuse_topic(self, topic: str) -> AttemptOutcome | None:
        """Why a KAFKA delivery is not even produced, if it is not."""
        if topic.startswith(self._kafka.topic_prefix):
            return _not_allowed(AttemptKind.PERMANENT, f"topic {topic!r} is one of the scheduler's")
        allowed = self._settings.kafka_destination_prefixes
        if allowed and not any(topic.startswith(prefix) for prefix in allowed):
            return _not_allowed(
                AttemptKind.PERMANENT, f"topic {topic!r} is outside the allowed prefixes"
            )
        if not await self._topic_check.exists(topic):
            # Metadata can miss a topic for a moment (just created, a broker restarting):
            # retried with backoff; FAILED once the attempts are used up.
            return AttemptOutcome(
                AttemptKind.RETRYABLE, "unknown_topic", error=f"topic {topic!r} does not exist"
            )
        return None

    def _observe(
        self,
        destination: str,
        message: DueMessage,
        outcome: AttemptOutcome,
        settlement: Settlement,
    ) -> None:
        label = settlement.result.outcome.value.lower()
        self._metrics.attempts.labels(destination, label, outcome.reason).inc()
        self._metrics.app_attempts.inc(settlement.result.app_id, label)
        if outcome.kind is AttemptKind.SENT:
            delivered = settlement.result.finished_ms
            lateness = lateness_ms(message, delivered) / 1000.0
            self._metrics.lateness.labels(destination).observe(lateness)
            delay = dispatch_delay_ms(message, delivered) / 1000.0
            self._metrics.delay.labels(destination).observe(delay)

    # -- output records -------------------------------------------------------------------

    def _result_record(self, result: DeliveryResult) -> OutRecord:
        return OutRecord(
            topic=self._topics.results,
            key=result.message_id.encode(),
            value=self._codecs.result.encode(result),
        )

    async def _settlement_records(
        self, settlement: Settlement, now_ms: int, shards: int | None
    ) -> list[OutRecord]:
        records = [self._result_record(settlement.result)]
        retry = settlement.retry
        if retry is not None and await self._reschedule_via_ring(retry, shards):
            records.append(
                OutRecord(
                    topic=self._topics.ring.topic_for_send(retry.due_ms, now_ms),
                    key=retry.message_id.encode(),
                    value=self._codecs.due.encode(retry),
                )
            )
        if settlement.dead_letter is not None:
            records.append(
                OutRecord(
                    topic=self._topics.dead_letter,
                    key=settlement.dead_letter.message_id.encode(),
                    value=self._codecs.dead_letter.encode(settlement.dead_letter),
                )
            )
        return records

    async def _reschedule_via_ring(self, retry: DueMessage, shards: int | None) -> bool:
        """Placement (decision 2) for a retry: the ring if its bucket is claimed, else stored.

        A stored retry (row and index entries) is durable before the claim is re-read, and both
        happen before the attempt's offset commits; if a releaser claimed its bucket meanwhile,
        it goes to the ring as well (duplicates are dropped downstream).
        """
        s = self._scheduling
        claim = await asyncio.to_thread(self._buckets.claimed_up_to)
        if place(retry.due_ms, claim, s.placement_margin_ms, s.bucket_width_ms) is (
            Placement.DIRECT
        ):
            return True
        bucket = bucket_start(retry.due_ms, s.bucket_width_ms)
        shard = shard_of(retry.message_id, shards or s.shards_per_bucket)
        await asyncio.to_thread(self._buckets.store, bucket, shard, retry)
        claim = await asyncio.to_thread(self._buckets.claimed_up_to)
        return claimed(retry.due_ms, claim, s.bucket_width_ms)
