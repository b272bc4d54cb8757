"""The message plane: schedule (single and batch), list, get, logs, abort, redrive.

Scheduling answers only after Kafka acknowledged the ScheduleRequest; then it writes the record
READY (read-your-writes), its "scheduled" log entry and the usage count. If Kafka fails the
answer is 503 and nothing is written anywhere. If the record write fails after the ack, the
message is still safe (the bucketer writes the same record from Kafka), so the answer stays 200
and the failure is logged and counted.

Idempotency keys (decision 8; services/ingest/README.md, "Idempotency keys"): a keyed request
first claims its key (`MessageStore.claim_keys`: the record if the message is recorded, else a
conditional insert that exactly one claimer wins, in any replica or in the bucketer). The winner
publishes as any request. A loser with another body is refused (409 `idempotency_conflict`). A
loser with the same body is answered with the holder's message (`duplicate: true`): from its
record when there is one; otherwise it publishes the holder's request again itself (same id,
body and `created_ms`) before answering. That covers a winner that died between its claim and
its publish, or whose publish failed: the key is never left claimed for a message nobody sent,
and a client never gets a 200 for a message that is not in Kafka. The second copy, in a true
race, is harmless: every write downstream is keyed by the message id and the copies are
identical (the dispatcher drops a second delivery by (id, generation, attempt)).

Abort writes ABORTED first (by precedence), re-reads the record to confirm it won, then publishes
the abort command: the dispatcher checks the record again at fire time, so a command lost with a
503 cannot let the message slip through. The answer is 200 only when the abort certainly won:
the command was acknowledged by due - G (the dispatcher fires only with a commands view fresh as
of due - G), or, acknowledged later, the dispatcher's own result of the attempt says it skipped
it (outcomes.py); otherwise 409 too_late. Redrive publishes first, then writes READY: a record
showing READY with no command behind it would never be delivered.

Reschedule is the two in sequence, on a READY or QUEUED message: the abort of its generation,
then the next generation due at the new sendAt through a REDRIVE command (generation and
send_at_ms), never the RESCHEDULE kind, which bucketers refuse: so a bucketer of any version
places the new generation, and a copy of the old one is refused at fire time (aborted, and a
later generation on the record). The ABORT command carries the aborted attempt's due instant,
so that a bucketer that reads it after the record moved on still removes the stored row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler.clock import Clock
from scheduler.codec import RecordCodec, value_subject
from scheduler.domain.errors import ValidationError
from scheduler.domain.idempotency import (
    IDEMPOTENCY_CONFLICT,
    KeyClaim,
    KeyHolder,
    claim_of,
    fingerprint,
)
from scheduler.domain.ids import derived_message_id, is_message_id, new_message_id
from scheduler.domain.lateness import dispatch_delay_of
from scheduler.domain.sendat import check_horizon, format_rfc3339_ms
from scheduler.domain.status import ABORTABLE, FIRST_ATTEMPT, Status
from scheduler.domain.validation import validate_schedule_request
from scheduler.domain.window import instant_in_window
from scheduler.records import Command, CommandKind, DeliveryOutcome, DeliveryResult, ScheduleRequest
from scheduler.schedule_occurrences import abort_created_ahead, revive_paused
from scheduler.settings import SchedulingSettings
from scheduler.store.cursor import decode_cursor
from scheduler.store.ports import (
    LogEntry,
    MessageContent,
    MessageStore,
    MessageView,
    Schedule,
    StatusUpdate,
)
from scheduler.store.usage import usage_day
from scheduler.topics import Topics
from scheduler_ingest.bodies import Draft
from scheduler_ingest.errors import ApiError
from scheduler_ingest.io import BlockingIo, driver_results
from scheduler_ingest.log_view import render_log_data
from scheduler_ingest.metrics import IngestMetrics
from scheduler_ingest.outcomes import AbortOutcome, NoResultLookup, ResultLookup, not_delivered
from scheduler_ingest.pending import PendingCap
from scheduler_ingest.publisher import Publisher, PublishError
from scheduler_ingest.usage import UsageCounter

if TYPE_CHECKING:  # the registry client pulls in an OAuth stack (~0.3 s of imports)
    from confluent_kafka.schema_registry import SchemaRegistryClient

log = logging.getLogger("scheduler_ingest.messages")

_ULID_RANDOM_BYTES = 10  # the 80 random bits of a ULID
SAVE_PER_BATCH = 10  # messages per unlogged Cassandra batch when recording a batch request
# Results are looked for from this long before due - G (a result is never written before the
# fire instant, which is after due - G; the slack covers the broker's clock on its timestamps).
RESULTS_LOOKBACK_MS = 1_000
# A lookup that starts after its wait bound (writes slower than the bound) still gets this long
# to read the results already there, rather than answering "unconfirmed" unread.
LOOKUP_FLOOR_MS = 1_000
# The reason of the ABORTED log entry a reschedule writes (its mark, should it be interrupted).
RESCHEDULED = "rescheduled"


@dataclass(frozen=True)
class Accepted:
    message_id: str
    send_at_ms: int
    status: Status
    duplicate: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "scheduledMessageId": self.message_id,
            "messageId": self.message_id,
            "sendAt": format_rfc3339_ms(self.send_at_ms),
            "status": self.status.value,
            "duplicate": self.duplicate,
        }


def unavailable(exc: PublishError, retry_after_s: int) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"Kafka did not acknowledge the write ({exc.cause}); nothing was stored, retry",
        {"Retry-After": str(retry_after_s)},
    )


def conflict(claim: KeyClaim, holder: KeyHolder) -> ApiError:
    return ApiError(
        409,
        IDEMPOTENCY_CONFLICT,
        f"idempotencyKey {claim.idempotency_key!r} was already used in this application for a"
        f" different request (message {holder.claim.message_id}: another payload, sendAt or"
        " kafkaKey); nothing was scheduled. Repeat the same request, or use a new key",
    )


def claim_unavailable(exc: Exception, retry_after_s: int) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"Cassandra did not answer the idempotency key claim ({type(exc).__name__});"
        " nothing was published, retry",
        {"Retry-After": str(retry_after_s)},
    )


@dataclass(frozen=True)
class _Publish:
    """A request to publish: a new message, or the holder's request again (`duplicate`)."""

    request: ScheduleRequest
    duplicate: bool = False


def settle_claim(
    request: ScheduleRequest, claim: KeyClaim, holder: KeyHolder
) -> _Publish | Accepted | ApiError:
    """What a keyed request does once its key's holder is known (see the module docstring)."""
    if not claim.same_request(holder.claim):
        return conflict(claim, holder)
    if holder.won:
        return _Publish(request)
    if holder.status is not None:
        return Accepted(request.message_id, request.send_at_ms, holder.status, duplicate=True)
    # Claimed, not recorded: the winner is publishing, died before it, or its publish failed.
    # Publishing its request again (same created_ms: byte for byte the same message) is
    # harmless in the first case and saves the message in the others.
    again = dataclasses.replace(request, created_ms=holder.claim.created_ms)
    return _Publish(again, duplicate=True)


def not_found() -> ApiError:
    return ApiError(404, "message_not_found", "no such message in this application")


def _reschedule_interrupted(headers: dict[str, str]) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        "Kafka did not acknowledge a command of the reschedule: the message is ABORTED at its"
        " old time (it will not be delivered then) and not moved yet; repeat the reschedule to"
        " complete it",
        headers,
    )


class MessageService:
    def __init__(
        self,
        *,
        store: MessageStore,
        usage: UsageCounter,
        publisher: Publisher,
        clock: Clock,
        scheduling: SchedulingSettings,
        topics: Topics,
        metrics: IngestMetrics,
        io: BlockingIo,
        retry_after_s: int,
        pending: PendingCap,
        key_ttl_ms: int,
        registry: SchemaRegistryClient | None = None,
        results: ResultLookup | None = None,
        abort_outcome_wait_ms: int = 5_000,
    ) -> None:
        """`key_ttl_ms`: how long a claimed idempotency key is kept (`claim_ttl_ms` of the
        requests topic's retention)."""
        self._store = store
        self._results = results or NoResultLookup()
        self._abort_outcome_wait_ms = abort_outcome_wait_ms
        self._key_ttl_ms = key_ttl_ms
        self._usage = usage
        self._pending = pending
        self._publisher = publisher
        self._clock = clock
        self._scheduling = scheduling
        self._topics = topics
        self._metrics = metrics
        self._io = io
        self._retry_after_s = retry_after_s
        # Confluent wire format when a schema registry is configured, single-object otherwise.
        self._requests = RecordCodec(
            ScheduleRequest,
            registry=registry,
            subject=value_subject(topics.requests) if registry is not None else None,
        )
        self._commands = RecordCodec(
            Command,
            registry=registry,
            subject=value_subject(topics.commands) if registry is not None else None,
        )

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def metrics(self) -> IngestMetrics:
        return self._metrics

    # -- scheduling -----------------------------------------------------------------------------

    def build(
        self, app_id: str, draft: Draft, now_ms: int, random_bits: int | None = None
    ) -> ScheduleRequest:
        """The request to publish; raises ValidationError (horizon, sizes, keys)."""
        message_id = (
            derived_message_id(app_id, draft.idempotency_key)
            if draft.idempotency_key is not None
            else new_message_id(now_ms, random_bits)
        )
        request = ScheduleRequest(
            message_id=message_id,
            app_id=app_id,
            payload_json=draft.payload_json,
            send_at_ms=instant_in_window(message_id, draft.send_at_ms, draft.flexible_window_ms),
            created_ms=now_ms,
            source="http",
            idempotency_key=draft.idempotency_key,
            kafka_key=draft.kafka_key,
        )
        validate_schedule_request(request, self._scheduling)
        return request

    async def schedule(self, app_id: str, draft: Draft) -> Accepted:
        try:
            request = self.build(app_id, draft, self._clock.now_ms())
        except ValidationError as exc:
            raise ApiError.invalid(exc) from None
        duplicate = False
        claim = claim_of(request)
        if claim is not None:
            [holder] = await self._claim([claim])
            settled = settle_claim(request, claim, holder)
            if isinstance(settled, Accepted):
                return settled
            if isinstance(settled, ApiError):
                raise settled
            request, duplicate = settled.request, settled.duplicate
        try:
            await self._publish_request(request)
        except PublishError as exc:
            raise unavailable(exc, self._retry_after_s) from None
        await self._record([request])
        self._metrics.scheduled.labels("single").inc()
        self._metrics.app_scheduled.inc(app_id)
        return Accepted(request.message_id, request.send_at_ms, Status.READY, duplicate)

    async def schedule_batch(
        self, app_id: str, items: Sequence[Draft | ValidationError]
    ) -> list[Accepted | ApiError]:
        """Per-item results, in order. Items are independent: one bad item fails alone.

        Steps: build and validate every item; claim the idempotency keys (one call for the
        batch) and settle each keyed item like a single request (a repeated key within the
        batch is settled against its first item); publish the rest in one go; record what
        Kafka acknowledged."""
        results = self._build_all(app_id, items, self._clock.now_ms())
        duplicates = await self._settle_keys(results)
        to_publish, repeats = _first_occurrences(results)
        errors = await self._publisher.publish_many(
            [
                (self._topics.requests, r.app_id.encode(), self._requests.encode(r))
                for _, r in to_publish
            ]
        )
        published = []
        for (i, request), error in zip(to_publish, errors, strict=True):
            if error is not None:
                self._metrics.produce_failures.labels("requests", error.cause).inc()
                results[i] = unavailable(error, self._retry_after_s)
            else:
                published.append(request)
                results[i] = Accepted(
                    request.message_id, request.send_at_ms, Status.READY, i in duplicates
                )
        for i, first in repeats:
            outcome = results[first]
            results[i] = (
                dataclasses.replace(outcome, duplicate=True)
                if isinstance(outcome, Accepted)
                else outcome
            )
        await self._record(published)
        self._metrics.scheduled.labels("batch").inc(len(published))
        self._metrics.app_scheduled.inc(app_id, n=len(published))
        final = [r for r in results if not isinstance(r, ScheduleRequest)]
        assert len(final) == len(results)
        return final

    def _build_all(
        self, app_id: str, items: Sequence[Draft | ValidationError], now_ms: int
    ) -> list[Accepted | ApiError | ScheduleRequest]:
        # One read of the OS random source for the whole batch (the ULIDs' random parts).
        entropy = secrets.token_bytes(_ULID_RANDOM_BYTES * len(items))
        results: list[Accepted | ApiError | ScheduleRequest] = []
        for k, item in enumerate(items):
            if isinstance(item, ValidationError):
                results.append(ApiError.invalid(item))
                continue
            bits = int.from_bytes(entropy[k * _ULID_RANDOM_BYTES : (k + 1) * _ULID_RANDOM_BYTES])
            try:
                results.append(self.build(app_id, item, now_ms, bits))
            except ValidationError as exc:
                results.append(ApiError.invalid(exc))
        return results

    async def _settle_keys(self, results: list[Accepted | ApiError | ScheduleRequest]) -> set[int]:
        """Claim the keyed items' keys and settle each in place; the positions of the items
        that publish their holder's request again (answered as duplicates)."""
        keyed = [
            (i, r, c)
            for i, r in enumerate(results)
            if isinstance(r, ScheduleRequest) and (c := claim_of(r)) is not None
        ]
        if not keyed:
            return set()
        try:
            holders = await self._claim([c for _, _, c in keyed])
        except ApiError as exc:
            for i, _, _ in keyed:
                results[i] = exc
            return set()
        duplicates: set[int] = set()
        for (i, request, claim), holder in zip(keyed, holders, strict=True):
            settled = settle_claim(request, claim, holder)
            if isinstance(settled, _Publish):
                results[i] = settled.request
                if settled.duplicate:
                    duplicates.add(i)
            else:
                results[i] = settled
        return duplicates

    async def _claim(self, claims: Sequence[KeyClaim]) -> list[KeyHolder]:
        # The Cassandra adapter's non-blocking path (its driver callbacks chain the record read
        # and the conditional insert): awaited on the loop, no I/O thread parked per request.
        start_claim_keys = getattr(self._store, "start_claim_keys", None)
        try:
            if start_claim_keys is not None:
                holders: list[KeyHolder] = await asyncio.wrap_future(
                    start_claim_keys(claims, self._key_ttl_ms)
                )
                return holders
            return await self._io(self._store.claim_keys, claims, self._key_ttl_ms)
        except Exception as exc:  # noqa: BLE001 - nothing published yet: the client retries
            log.warning("idempotency key claim failed: %r", exc)
            raise claim_unavailable(exc, self._retry_after_s) from None

    async def known(self, app_id: str, draft: Draft) -> Accepted | None:
        """The message already recorded for the draft's idempotency key, if it is the same
        request: a retry of an accepted request is answered with it even when a limit would
        refuse a new one."""
        if draft.idempotency_key is None:
            return None
        message_id = derived_message_id(app_id, draft.idempotency_key)
        view = await self._io(self._store.get, app_id, message_id)
        if view is None:
            return None
        c = view.content
        if fingerprint(c.payload_json, c.send_at_ms, c.kafka_key) != fingerprint(
            draft.payload_json, draft.send_at_ms, draft.kafka_key
        ):
            return None
        return Accepted(c.message_id, c.send_at_ms, view.state.status, True)

    async def _publish_request(self, request: ScheduleRequest) -> None:
        try:
            await self._publisher.publish(
                self._topics.requests, request.app_id.encode(), self._requests.encode(request)
            )
        except PublishError as exc:
            self._metrics.produce_failures.labels("requests", exc.cause).inc()
            raise

    async def _record(self, requests: Sequence[ScheduleRequest]) -> None:
        if not requests:
            return
        items = [_record_of(r) for r in requests]
        # The Cassandra adapter's batched, non-blocking path: the driver's futures are awaited
        # on the loop, no I/O thread is parked per request.
        start_save_many = getattr(self._store, "start_save_many", None)
        if start_save_many is not None:
            try:
                await driver_results(start_save_many(items, per_batch=SAVE_PER_BATCH))
                failures: list[BaseException] = []
            except Exception as exc:  # noqa: BLE001 - Kafka has them: logged, answered 200
                failures = [exc] * len(items)
        else:
            results = await asyncio.gather(
                *(self._io(self._store.save, *item) for item in items), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._metrics.record_write_failures.inc(len(failures))
            log.warning(
                "%d record write(s) failed after the Kafka ack (the bucketer writes them): %r",
                len(failures),
                failures[0],
            )
        by_day: dict[tuple[str, int], int] = {}
        for r in requests:
            key = (r.app_id, usage_day(r.created_ms))
            by_day[key] = by_day.get(key, 0) + 1
        for (app_id, day), n in by_day.items():
            await self._usage.count(app_id, day, n)

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, app_id: str, message_id: str) -> MessageView:
        if not is_message_id(message_id):
            raise not_found()
        view = await self._io(self._store.get, app_id, message_id)
        if view is None:
            raise not_found()
        return view

    async def logs(self, app_id: str, message_id: str) -> list[LogEntry]:
        await self.get(app_id, message_id)
        return await self._io(self._store.logs, app_id, message_id)

    async def list(
        self, app_id: str, status: str | None, start_from: str | None, limit: int
    ) -> tuple[list[MessageView], str | None]:
        wanted: Status | None = None
        if status:
            try:
                wanted = Status(status.upper())
            except ValueError:
                raise ApiError(
                    400,
                    "invalid_parameter",
                    f"status must be one of {', '.join(s.value for s in Status)}",
                ) from None
        if start_from:
            try:
                decode_cursor(start_from)
            except ValueError:
                raise ApiError(
                    400, "invalid_cursor", "startFrom is not a cursor of this API"
                ) from None
        page = await self._io(self._store.list, app_id, wanted, start_from or None, limit)
        return list(page.items), page.next_cursor

    # -- abort and redrive ----------------------------------------------------------------------

    async def abort(self, app_id: str, message_id: str, by: str = "api") -> MessageView:
        """`by` (who asked: "api", "console") goes into the ABORTED log entry."""
        view = await self.get(app_id, message_id)
        state = view.state
        now = self._clock.now_ms()
        self._check_abortable(state, now, "not_abortable", "aborted")
        after = await self._write_aborted(app_id, message_id, state, now, {"by": by})
        await self._confirm_abort(app_id, message_id, state, now)
        return after

    def _check_abortable(self, state: StatusUpdate, now: int, token: str, verb: str) -> None:
        """The checks made before any write: READY or QUEUED, and not within the guard."""
        if state.status not in ABORTABLE:
            raise ApiError(409, token, f"the message is {state.status.value}; only READY or QUEUED")
        if now >= state.due_ms - self._scheduling.cancel_guard_ms:
            raise ApiError(
                409,
                "too_late",
                f"the message is due within {self._scheduling.cancel_guard_ms} ms;"
                f" it can no longer be {verb} reliably",
            )

    async def _write_aborted(
        self,
        app_id: str,
        message_id: str,
        state: StatusUpdate,
        now: int,
        data: dict[str, object],
    ) -> MessageView:
        """Write ABORTED at the record's generation (by precedence), confirm it won, and take the
        message off the app's pending count: ABORTED is terminal from here on, whatever becomes
        of the command."""
        aborted = StatusUpdate(Status.ABORTED, state.generation, state.attempt, state.due_ms, now)
        entry = LogEntry(now, f"{state.generation}:aborted", Status.ABORTED, data)
        await self._io(self._store.update_status, app_id, message_id, aborted, entry)
        after = await self.get(app_id, message_id)
        if after.state.status is not Status.ABORTED or after.state.generation != state.generation:
            raise ApiError(
                409, "too_late", f"the message became {after.state.status.value} meanwhile"
            )
        await self._move_pending(app_id, -1)
        return after

    async def _confirm_abort(
        self,
        app_id: str,
        message_id: str,
        state: StatusUpdate,
        issued_ms: int,
        *,
        count_pending: bool = True,
    ) -> None:
        """Publish the ABORT command of the attempt `state` shows and return only if that attempt
        is certainly not delivered (module docstring); otherwise raise the 503 or the 409.
        The command carries the attempt's due instant (`send_at_ms`, ignored by the dispatcher
        and by bucketers before reschedule): the bucketer then removes its stored row even once
        the record has moved on to a later generation. `count_pending` False: a repeated
        confirmation (a resumed reschedule) leaves the pending count alone."""
        command = Command(
            message_id=message_id,
            app_id=app_id,
            kind=CommandKind.ABORT,
            generation=state.generation,
            issued_ms=issued_ms,
            send_at_ms=state.due_ms,
        )
        try:
            await self._publish_command(command)
        except PublishError as exc:
            # The record is ABORTED and the dispatcher re-checks it at fire time.
            log.warning(
                "abort of %s/%s recorded but its command failed: %s", app_id, message_id, exc
            )
            raise unavailable(exc, self._retry_after_s) from None
        acked = self._clock.now_ms()  # read after the ack: never earlier than the ack itself
        if acked <= state.due_ms - self._scheduling.cancel_guard_ms:
            self._metrics.abort_outcomes.labels(AbortOutcome.CERTAIN.value).inc()
            return
        # Acknowledged too late to be sure: the dispatcher may have fired before its view held
        # the command, and the record cannot tell yet. Its own result of the attempt can.
        result = await self._results.find(
            app_id,
            message_id,
            state.generation,
            state.attempt,
            since_ms=state.due_ms - self._scheduling.cancel_guard_ms - RESULTS_LOOKBACK_MS,
            deadline_ms=max(state.due_ms + self._abort_outcome_wait_ms, acked + LOOKUP_FLOOR_MS),
        )
        if result is not None and not_delivered(result):
            self._metrics.abort_outcomes.labels(AbortOutcome.CONFIRMED_NOT_DELIVERED.value).inc()
            return
        raise await self._lost_abort(app_id, result, count_pending=count_pending)

    async def _lost_abort(
        self, app_id: str, result: DeliveryResult | None, *, count_pending: bool = True
    ) -> ApiError:
        """The 409 of an abort the dispatcher may have beaten (the record stays ABORTED unless
        the result was SENT: precedence)."""
        if result is None:
            self._metrics.abort_outcomes.labels(AbortOutcome.UNCONFIRMED.value).inc()
            return ApiError(
                409,
                "too_late",
                "the abort reached the dispatcher too close to the due time and whether the"
                " message was delivered could not be confirmed within"
                f" {self._abort_outcome_wait_ms} ms of it: treat it as delivered",
            )
        self._metrics.abort_outcomes.labels(AbortOutcome.TOO_LATE_DELIVERED.value).inc()
        if count_pending and result.outcome in (DeliveryOutcome.SENT, DeliveryOutcome.FAILED):
            # The record writer counts this result as leaving pending: undo the abort's count.
            await self._move_pending(app_id, +1)
        if result.outcome is DeliveryOutcome.SENT:
            return ApiError(409, "too_late", "the message was delivered before the abort arrived")
        return ApiError(
            409,
            "too_late",
            f"the message was attempted before the abort arrived ({result.outcome.value}): the"
            " receiver may have received it; later attempts stop once the dispatcher has read"
            " the abort",
        )

    async def redrive(self, app_id: str, message_id: str) -> MessageView:
        view = await self.get(app_id, message_id)
        state = view.state
        if state.status is not Status.FAILED:
            raise ApiError(
                409, "not_redrivable", f"the message is {state.status.value}; only FAILED"
            )
        now = self._clock.now_ms()
        generation = state.generation + 1
        data: dict[str, object] = {"generation": generation}
        try:
            return await self._start_generation(
                app_id, message_id, generation, now, now, "redriven", data
            )
        except PublishError as exc:
            raise unavailable(exc, self._retry_after_s) from None

    # -- reschedule -----------------------------------------------------------------------------

    async def reschedule(
        self, app_id: str, message_id: str, send_at_ms: int, by: str = "api"
    ) -> MessageView:
        """Move a READY or QUEUED message to `send_at_ms`, keeping its id. The generation it is at
        ends exactly as `abort` ends it (same checks, same guard, same certainty: a copy already
        queued never fires at the old time), then the message continues as the next generation,
        due at `send_at_ms`, through a REDRIVE command: the kind every bucketer applies, old ones
        included. `by` goes into the ABORTED log entry, as for an abort.

        A reschedule interrupted after its ABORTED write (a 503) left the message ABORTED with
        the reason "rescheduled": repeating it completes it (the abort is confirmed again)."""
        try:
            moved = await self._reschedule(app_id, message_id, send_at_ms, by)
        except ApiError as exc:
            self._metrics.message_operations.labels("reschedule", exc.token).inc()
            raise
        self._metrics.message_operations.labels("reschedule", "rescheduled").inc()
        return moved

    async def _reschedule(
        self, app_id: str, message_id: str, send_at_ms: int, by: str
    ) -> MessageView:
        view = await self.get(app_id, message_id)
        state = view.state
        now = self._clock.now_ms()
        try:
            check_horizon(
                send_at_ms, now, self._scheduling.past_window_ms, self._scheduling.max_future_ms
            )
        except ValidationError as exc:
            raise ApiError.invalid(exc) from None
        try:
            if state.status is Status.ABORTED and await self._interrupted_reschedule(
                app_id, message_id, state
            ):
                # Its abort was written, and counted off the pending count, the first time.
                await self._confirm_abort(app_id, message_id, state, now, count_pending=False)
            else:
                self._check_abortable(state, now, "not_reschedulable", "rescheduled")
                data: dict[str, object] = {"by": by, "reason": RESCHEDULED}
                await self._write_aborted(app_id, message_id, state, now, data)
                await self._confirm_abort(app_id, message_id, state, now)
        except ApiError as exc:
            if exc.status == 503:
                raise _reschedule_interrupted(exc.headers) from None
            raise
        return await self._next_generation(app_id, message_id, state, send_at_ms)

    async def _interrupted_reschedule(
        self, app_id: str, message_id: str, state: StatusUpdate
    ) -> bool:
        """Was this ABORTED generation ended by a reschedule (that then did not finish: the
        record would be at the next generation otherwise)?"""
        entries = await self._io(self._store.logs, app_id, message_id)
        mark = f"{state.generation}:aborted"
        return any(e.entry_id == mark and e.data.get("reason") == RESCHEDULED for e in entries)

    async def _next_generation(
        self, app_id: str, message_id: str, old: StatusUpdate, send_at_ms: int
    ) -> MessageView:
        """The rescheduled message continues as generation + 1 due at `send_at_ms`."""
        generation = old.generation + 1
        moved = {"from": format_rfc3339_ms(old.due_ms), "to": format_rfc3339_ms(send_at_ms)}
        data: dict[str, object] = {"rescheduled": moved, "generation": generation}
        now = self._clock.now_ms()
        try:
            return await self._start_generation(
                app_id, message_id, generation, send_at_ms, now, "rescheduled", data
            )
        except PublishError as exc:
            log.warning("reschedule of %s/%s stopped after its abort: %s", app_id, message_id, exc)
            raise _reschedule_interrupted({"Retry-After": str(self._retry_after_s)}) from None

    async def _start_generation(
        self,
        app_id: str,
        message_id: str,
        generation: int,
        due_ms: int,
        now: int,
        event: str,
        data: dict[str, object],
    ) -> MessageView:
        """Generation `generation` of the message, due at `due_ms` (a redrive, a reschedule): the
        REDRIVE command first (a READY record with no command behind it would never be
        delivered), then the pending count and the READY record, for read-your-writes. A
        PublishError propagates before anything was changed."""
        command = Command(
            message_id=message_id,
            app_id=app_id,
            kind=CommandKind.REDRIVE,
            generation=generation,
            issued_ms=now,
            send_at_ms=due_ms,
        )
        await self._publish_command(command)
        # Delivered again from here on: pending again, whatever the record says.
        await self._move_pending(app_id, +1)
        ready = StatusUpdate(Status.READY, generation, FIRST_ATTEMPT, due_ms=due_ms, at_ms=now)
        entry = LogEntry(now, f"{generation}:{event}", Status.READY, data)
        await self._io(self._store.update_status, app_id, message_id, ready, entry)
        return await self.get(app_id, message_id)

    async def stop_occurrences(
        self, schedule: Schedule, now: int, why: str, *, move_pending: bool
    ) -> int:
        """Abort the occurrences a paused or deleted schedule created ahead, except those within
        the cancel guard (delivered). The records first, as `abort` does: the dispatcher
        re-checks a record at fire time, so a command lost with the 503 cannot let a message
        through, and repeating the call is harmless. `move_pending`: take them off the app's
        pending count (False when a repeated call already did). Returns how many."""
        guard = self._scheduling.cancel_guard_ms
        writes, commands = await self._io(
            abort_created_ahead, schedule, self._store, now, guard, why
        )
        if writes:
            await self._io(self._store.update_statuses, writes)
            if move_pending:  # terminal from here on, whatever becomes of the commands
                await self._move_pending(schedule.app_id, -len(writes))
        stored = "the change and the ABORTED records are stored, and the dispatcher checks a"
        await self._publish_commands(commands, "abort", f"{stored} record before it delivers")
        return len(writes)

    async def revive_occurrences(self, schedule: Schedule, now: int) -> int:
        """Bring back, as their next generation, the occurrences a pause of this (now resumed)
        schedule aborted (scheduler.schedule_occurrences.revive_paused). The REDRIVE commands
        first, then the READY records, as a redrive: a READY record with no command behind it
        would never be delivered. Returns how many were started."""
        guard = self._scheduling.cancel_guard_ms
        revivals = await self._io(revive_paused, schedule, self._store, now, guard)
        if not revivals:
            return 0
        commands = [r.command for r in revivals]
        again = "the resume is stored: repeat it to bring back the occurrences its pause aborted"
        await self._publish_commands(commands, "redrive", again)
        started = [r.ready for r in revivals if r.ready is not None]
        if started:
            await self._move_pending(schedule.app_id, len(started))
            await self._io(self._store.update_statuses, started)
        return len(started)

    async def _publish_commands(self, commands: Sequence[Command], kind: str, then: str) -> None:
        results = await asyncio.gather(
            *(self._publish_command(c) for c in commands), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            first = failed[0]
            if not isinstance(first, PublishError):
                raise first
            raise ApiError(
                503,
                "unavailable",
                f"Kafka did not acknowledge {len(failed)} {kind} command(s) ({first.cause});"
                f" {then}",
                {"Retry-After": str(self._retry_after_s)},
            )

    async def _move_pending(self, app_id: str, delta: int) -> None:
        await self._usage.move_pending(app_id, delta)
        self._pending.adjust(app_id, delta)

    async def _publish_command(self, command: Command) -> None:
        try:
            await self._publisher.publish(
                self._topics.commands, command.message_id.encode(), self._commands.encode(command)
            )
        except PublishError as exc:
            self._metrics.produce_failures.labels("commands", exc.cause).inc()
            raise


def _first_occurrences(
    results: Sequence[Accepted | ApiError | ScheduleRequest],
) -> tuple[list[tuple[int, ScheduleRequest]], list[tuple[int, int]]]:
    """The requests to publish (the first of each message id) with their positions, and the
    (position, position of the first) of repeats: the same idempotency key twice in one batch
    is answered like a later request with that key."""
    first_of: dict[str, int] = {}
    to_publish: list[tuple[int, ScheduleRequest]] = []
    repeats: list[tuple[int, int]] = []
    for i, r in enumerate(results):
        if not isinstance(r, ScheduleRequest):
            continue
        if r.message_id in first_of:
            repeats.append((i, first_of[r.message_id]))
        else:
            first_of[r.message_id] = i
            to_publish.append((i, r))
    return to_publish, repeats


def _record_of(r: ScheduleRequest) -> tuple[MessageContent, StatusUpdate, LogEntry]:
    """The record ingest writes once Kafka acknowledged a request: READY, generation 0."""
    content = MessageContent.of_request(r)
    state = StatusUpdate(Status.READY, 0, FIRST_ATTEMPT, due_ms=r.send_at_ms, at_ms=r.created_ms)
    entry = LogEntry(
        r.created_ms,
        f"0:{FIRST_ATTEMPT}:scheduled",
        Status.READY,
        {"sendAt": format_rfc3339_ms(r.send_at_ms), "source": r.source},
    )
    return content, state, entry


def message_json(view: MessageView) -> dict[str, Any]:
    c, s = view.content, view.state
    return {
        "appId": c.app_id,
        "messageId": c.message_id,
        "payload": _payload(c.payload_json),
        "sendAt": format_rfc3339_ms(c.send_at_ms),
        "status": s.status.value,
        "created": format_rfc3339_ms(c.created_ms),
        "updated": format_rfc3339_ms(s.at_ms),
        "dueAt": format_rfc3339_ms(s.due_ms),
        "generation": s.generation,
        "attempt": s.attempt,
        "latenessMs": s.lateness_ms,
        "dispatchDelayMs": (
            None
            if s.lateness_ms is None
            else dispatch_delay_of(s.lateness_ms, s.due_ms, c.created_ms)
        ),
        "lastHttpStatus": s.http_status,
        "lastError": s.error,
        "idempotencyKey": c.idempotency_key,
        "source": c.source,
    }


def log_json(entry: LogEntry) -> dict[str, Any]:
    return {
        "timestamp": format_rfc3339_ms(entry.at_ms),
        "status": entry.status.value,
        "data": render_log_data(entry.data),
    }


def _payload(payload_json: str) -> Any:
    return json.loads(payload_json)
