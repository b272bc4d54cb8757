"""The bucketer's command handler as released before reschedule: services/bucketer/
scheduler_bucketer/commands.py at commit 62f4d85 (last changed in 72f515e), its relative imports
made absolute and this paragraph prepended. It stands for an old bucketer reading the commands
of this version's ingest during a rolling upgrade (test_reschedule.py). Frozen: never update it.

Original docstring:
Commands on scheduler.commands, applied to stored messages.

- ABORT: ingest has already set the record to ABORTED (decision 5: it publishes the command only
  once the record shows ABORTED at that generation); here the stored bucket row is removed so the
  releaser does not stream it. A record still READY or QUEUED at the command's generation lost
  that write (a Cassandra snapshot restored to before the abort): the abort is applied again,
  by precedence. A record that moved past it (SENT, FAILED, a later generation) is left alone.
  The dispatcher checks the record again at fire time, so the abort wins even when the row was
  already released, or is stored again later by a replayed request.
- REDRIVE (FAILED -> READY, new generation): the message re-enters through the same placement
  as a new request (decision 3), with the content read from the message store. A command older
  than the record's generation, or whose generation already ended (SENT, FAILED, ABORTED), is
  stale and ignored.
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
from scheduler_bucketer.intake import InputRecord, Rejection, decode_reason
from scheduler_bucketer.metrics import BucketerMetrics
from scheduler_bucketer.placer import Entry, Outbox, Placer, shards_for
from scheduler_bucketer.routing import Router

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
            # No route produces it, and it cannot be guarded like an abort: the copy already in
            # the ring would still fire at the old time, beside the new generation. Refused; the
            # symbol stays in the schema so that records written earlier still decode.
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
                self._remove_stored(view, shards)
                return "applied"
            if view.state.status in ABORTABLE and view.state.generation == command.generation:
                self._reapply_abort(view, command)
                self._remove_stored(view, shards)
                return "reapplied"
            return "not_aborted"  # the record moved past it: removing the row could lose one
        if self._stale(view, command):
            return "stale"
        # Redrive: deliver promptly. The due time comes from the command, not the clock, so a
        # replay places the same row again.
        due = command.send_at_ms if command.send_at_ms is not None else command.issued_ms
        send_at = view.content.send_at_ms
        c = view.content
        message = DueMessage(
            message_id=c.message_id,
            app_id=c.app_id,
            generation=command.generation,
            attempt=1,
            due_ms=due,
            send_at_ms=send_at,
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

    def _remove_stored(self, view: MessageView, shards: int) -> None:
        """Delete the stored row(s) the message may have (at its recorded due time and at its
        original sendAt); deleting a row that does not exist is harmless."""
        c = view.content
        for due in {view.state.due_ms, c.send_at_ms}:
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
