"""The record writer: delivery results -> message records, logs and usage (decision 6).

Results are the source of truth (written in the dispatcher's transaction); records follow
asynchronously and idempotently: status writes go by precedence, log entries have
deterministic ids ("<generation>:<attempt>:<event>"), so replaying a result changes nothing
except the usage counters, which are documented as approximate. Counting SENT or FAILED also
lowers the app's pending count (scheduler.store.usage), which ingest's pending cap reads.
"""

from __future__ import annotations

from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.store.ports import LogEntry, MessageStore, StatusUpdate
from scheduler.store.usage import UsageKind, UsageStore, usage_day

from .verdict import Verdict


class RecordWriter:
    def __init__(self, messages: MessageStore, usage: UsageStore) -> None:
        self._messages = messages
        self._usage = usage

    def apply(self, r: DeliveryResult) -> None:
        entry = f"{r.generation}:{r.attempt}"
        attempt_data: dict[str, object] = {"attempt": r.attempt, "outcome": r.outcome.value}
        if r.http_status is not None:
            attempt_data["http_status"] = r.http_status
        if r.error is not None:
            attempt_data["error"] = r.error
        # One log entry per result (each is a status write plus a log row in Cassandra):
        # "<gen>:<attempt>:sent" | ":attempt" (a retry follows) | ":failed".
        if r.outcome is DeliveryOutcome.SENT:
            state = self._state(r, Status.SENT, lateness=r.lateness_ms)
            data = {**attempt_data, "lateness_ms": r.lateness_ms}
            self._write(r, state, LogEntry(r.finished_ms, f"{entry}:sent", Status.SENT, data))
            self._usage.add(r.app_id, usage_day(r.finished_ms), UsageKind.SENT)
        elif r.outcome is DeliveryOutcome.RETRY:
            state = self._state(r, Status.QUEUED)
            log = LogEntry(r.finished_ms, f"{entry}:attempt", Status.QUEUED, attempt_data)
            self._write(r, state, log)
        elif r.outcome is DeliveryOutcome.FAILED:
            state = self._state(r, Status.FAILED)
            log = LogEntry(r.finished_ms, f"{entry}:failed", Status.FAILED, attempt_data)
            self._write(r, state, log)
            self._usage.add(r.app_id, usage_day(r.finished_ms), UsageKind.FAILED)
        elif r.error == Verdict.APP_DELETED.value:
            # Lazy purge: a pending message of a deleted app ends ABORTED. Not counted: a deleted
            # app schedules nothing more, so its pending count is never read again.
            state = self._state(r, Status.ABORTED)
            data = {"reason": "application deleted"}
            self._write(r, state, LogEntry(r.finished_ms, f"{entry}:aborted", Status.ABORTED, data))
        # Other SKIPPED results (aborted, done, stale) leave the record as it is.

    def _state(
        self, r: DeliveryResult, status: Status, lateness: int | None = None
    ) -> StatusUpdate:
        return StatusUpdate(
            status=status,
            generation=r.generation,
            attempt=r.attempt,
            due_ms=r.due_ms,
            at_ms=r.finished_ms,
            lateness_ms=lateness,
            http_status=r.http_status,
            error=r.error,
        )

    def _write(self, r: DeliveryResult, state: StatusUpdate, log: LogEntry) -> None:
        self._messages.update_status(r.app_id, r.message_id, state, log)
