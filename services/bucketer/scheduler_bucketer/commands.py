"""Commands on scheduler.commands, applied to stored messages.

- ABORT: ingest has already set the record to ABORTED (decision 5: it publishes the command only
  once the record shows ABORTED at that generation); here the stored bucket row is removed so the
  releaser does not stream it. A record still READY or QUEUED at the command's generation lost
  that write (a Cassandra snapshot restored to before the abort): the abort is applied again,
  by precedence. A record that moved past it (SENT, FAILED, a later generation) is left alone,
  except the aborted generation's own row: a command that names its due instant (`send_at_ms`,
  which ingest sets since reschedule) has it removed even when the record is already at the
  next generation, the usual case for a reschedule, whose next generation ingest records at
  once. The dispatcher checks the record again at fire time, so the abort wins even when the
  row was already released, or is stored again later by a replayed request.
- REDRIVE (new generation): the message re-enters through the same placement as a new request
  (decision 3), due at the command's `send_at_ms`, with the content read from the message store.
  Ingest sends it for a redrive (FAILED -> READY, due now) and for a reschedule (after the ABORT
  of the current generation, due at the new sendAt). A command older than the record's
  generation, or whose generation already ended (SENT, FAILED, ABORTED), is stale and ignored.
- RESCHEDULE is refused (`unsupported_command`): see `_apply`.
"""

from __future__ import annotations

import logging

from scheduler.clock import Clock
from scheduler.codec import DecodeError, RecordCodec
from scheduler.domain.buckets import shard_of
from scheduler.domain.status import ABORTABLE, Status
from scheduler.records import Command, CommandKind, DueMessage
from scheduler.settings import SchedulingSettings
from scheduler.store.ports import (
    AppLookup,
    BucketStore,
    LogEntry,
    MessageStore,
    MessageView,
    StatusUpdate,
)

from .intake import InputRecord, Rejection, decode_reason
from .metrics import BucketerMetrics
from .placer import Entry, Outbox, Placer, shards_for
from .routing import Router

log = logging.getLogger("scheduler_bucketer.commands")


class CommandHandler:
    def __init__(
        self,
        codec: RecordCodec[Command],
        messages: MessageStore,
        buckets: BucketStore,
        apps: AppLookup,
        placer: Placer,
        router: Router,
        scheduling: SchedulingSettings,
        clock: Clock,
        metrics: BucketerMetrics,
    ) -> None:
        self._codec = codec
        self._messages = messages
        self._buckets = buckets
        self._apps = apps
        self._placer = placer
        self._router = router
        self._scheduling = scheduling
        self._clock = clock
        self._metrics = metrics

    def apply(self, record: InputRecord, outbox: Outbox) -> None:
        if not record.value:
            outbox.rejections.append(Rejection(record, "empty", "the record has no value"))
            return
        try:
            command = self._codec.decode(record.value)
        except DecodeError as exc:
            outbox.rejections.append(Rejection(record, decode_reason(exc), str(exc)))
            return
        except (KeyError, TypeError, ValueError) as exc:
            outbox.rejections.append(Rejection(record, "malformed", f"{type(exc).__name__}: {exc}"))
            return
        outcome = self._apply(command, record, outbox)
        self._metrics.commands.labels(command.kind.value, outcome).inc()
        log.info(
            "%s %s/%s generation %d: %s",
            command.kind.value,
            command.app_id,
            command.message_id,
            command.generation,
            outcome,
        )

    def _apply(self, command: Command, record: InputRecord, outbox: Outbox) -> str:
        if command.kind is CommandKind.RESCHEDULE:
            # No route produces it (the reschedule route sends ABORT then REDRIVE), and on its
            # own it cannot be guarded like an abort: the copy already in the ring would still
            # fire at the old time, beside the new generation. Refused; the symbol stays in the
            # schema so that records written earlier still decode.
            outbox.rejections.append(
                Rejection(
                    record,
                    "unsupported_command",
                    "RESCHEDULE is not supported: abort the message and schedule a new one",
                    command.app_id,
                    command.message_id,
                )
            )
            return "unsupported"
        view = self._messages.get(command.app_id, command.message_id)
        if view is None:
            return "unknown"
        shards = shards_for(self._apps.get_app(command.app_id), self._scheduling)
        if command.kind is CommandKind.ABORT:
            if view.state.status is Status.ABORTED:
                self._remove_stored(view, shards, command.send_at_ms)
                return "applied"
            if view.state.status in ABORTABLE and view.state.generation == command.generation:
                self._reapply_abort(view, command)
                self._remove_stored(view, shards, command.send_at_ms)
                return "reapplied"
            if self._remove_aborted_generation(view, command, shards):
                return "old_generation_removed"
            return "not_aborted"  # the record moved past it: removing its row could lose one
        if self._stale(view, command):
            return "stale"
        # A redrive (promptly) or a reschedule (at the new sendAt). The due time comes from the
        # command, not the clock, so a replay places the same row again. It is also the
        # generation's sendAt on the row (what an app's maxEventAgeMs counts from: verdict.py,
        # age_start_ms), not the sendAt of generation 0: a message redriven or moved days after
        # its first sendAt is not expired on arrival.
        due = command.send_at_ms if command.send_at_ms is not None else command.issued_ms
        c = view.content
        message = DueMessage(
            message_id=c.message_id,
            app_id=c.app_id,
            generation=command.generation,
            attempt=1,
            due_ms=due,
            send_at_ms=due,
            created_ms=c.created_ms,
            payload_json=c.payload_json,
            kafka_key=c.kafka_key,
        )
        self._placer.place([Entry(message, shards, "redriven", command.issued_ms)], outbox)
        return "applied"

    def _reapply_abort(self, view: MessageView, command: Command) -> None:
        state = view.state
        aborted = StatusUpdate(
            Status.ABORTED, state.generation, state.attempt, state.due_ms, command.issued_ms
        )
        by: dict[str, object] = {"by": "abort command"}
        entry = LogEntry(command.issued_ms, f"{state.generation}:aborted", Status.ABORTED, by)
        self._messages.update_status(command.app_id, command.message_id, aborted, entry)

    @staticmethod
    def _stale(view: MessageView, command: Command) -> bool:
        state = view.state
        if state.generation > command.generation:
            return True
        return state.generation == command.generation and state.status.terminal

    def _remove_aborted_generation(self, view: MessageView, command: Command, shards: int) -> bool:
        """The record is past the aborted generation (a reschedule: ingest records the next one
        right after the abort; SENT or FAILED at a later one). Remove the aborted generation's
        row at the due instant the command names, unless the record's own generation may have
        its live row there (a reschedule to the same instant): a row is known by its due
        instant and message id only, not by its generation. Left there, the row is released
        and the dispatcher refuses it (a later generation, and the abort), so this only spares
        the release."""
        old_due = command.send_at_ms
        state = view.state
        if old_due is None or state.generation <= command.generation:
            return False
        if state.status in ABORTABLE and state.due_ms == old_due:
            return False
        self._remove_rows(view, shards, {old_due})
        return True

    def _remove_stored(self, view: MessageView, shards: int, named_due: int | None) -> None:
        """Delete the stored row(s) the message may have (at its recorded due time, at its
        original sendAt, and at the due instant the command names); deleting a row that does not
        exist is harmless. Only for a record that is ABORTED (or about to be): none of its rows
        is live."""
        dues = {view.state.due_ms, view.content.send_at_ms}
        if named_due is not None:
            dues.add(named_due)
        self._remove_rows(view, shards, dues)

    def _remove_rows(self, view: MessageView, shards: int, dues: set[int]) -> None:
        c = view.content
        for due in dues:
            row = DueMessage(
                message_id=c.message_id,
                app_id=c.app_id,
                generation=view.state.generation,
                attempt=view.state.attempt,
                due_ms=due,
                send_at_ms=c.send_at_ms,
                created_ms=c.created_ms,
                payload_json=c.payload_json,
                kafka_key=c.kafka_key,
            )
            self._buckets.remove(self._router.bucket_of(due), shard_of(c.message_id, shards), row)
