"""The record writer: delivery results -> message records, logs and usage (decision 6).

Results are the source of truth (written in the dispatcher's transaction); records follow
asynchronously and idempotently: status writes go by precedence, log entries have
deterministic ids ("<generation>:<attempt>:<event>"), so replaying a result changes nothing
except the usage counters, which are documented as approximate. Counting SENT or FAILED also
lowers the app's pending count (scheduler.store.usage), which ingest's pending cap reads.
Usage is counted once per consumed batch (one counter write per app, day and kind), not once
per result: a counter write per delivery cost Cassandra more than the record writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler.domain.status import Status
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.store.ports import LogEntry, MessageStore, StatusUpdate, StatusWrite
from scheduler.store.usage import UsageKind, UsageStore, usage_day
from scheduler_releaser.app_gone import APP_DELETED, APP_NOT_FOUND

from .verdict import Verdict

COUNTED = {DeliveryOutcome.SENT: UsageKind.SENT, DeliveryOutcome.FAILED: UsageKind.FAILED}


# SKIPPED results whose message ends ABORTED, with the reason its log gives. An abort command
# ends the record too: ingest has usually written ABORTED already (then this write changes
# nothing), but a record restored from a snapshot older than the abort does not show it, and
# would otherwise stay QUEUED for good. Precedence keeps a SENT record SENT.
ENDS_ABORTED = {
    Verdict.ABORTED.value: "abort command",
    Verdict.APP_DELETED.value: APP_DELETED,
    Verdict.APP_MISSING.value: APP_NOT_FOUND,
}


class RecordWriter:
    def __init__(self, messages: MessageStore, usage: UsageStore) -> None:
        self._messages = messages
        self._usage = usage

    def apply(self, r: DeliveryResult) -> None:
        """One result: its record, then its usage count."""
        self.write(r)
        self.count([r])

    def count(self, results: Iterable[DeliveryResult]) -> None:
        """Usage counters sent/failed: one add per app, day and kind for all of `results`."""
        totals: dict[tuple[str, int, UsageKind], int] = {}
        for r in results:
            kind = COUNTED.get(r.outcome)
            if kind is not None:
                key = (r.app_id, usage_day(r.finished_ms), kind)
                totals[key] = totals.get(key, 0) + 1
        for (app_id, day, kind), n in totals.items():
            self._usage.add(app_id, day, kind, n)

    def write(self, r: DeliveryResult) -> None:
        self.write_many([r])

    def write_many(self, results: Sequence[DeliveryResult]) -> None:
        """The records of many results: one status write by precedence and one log entry each,
        sent together (MessageStore.update_statuses)."""
        writes = [w for w in map(self._record, results) if w is not None]
        if writes:
            self._messages.update_statuses(writes)

    def _record(self, r: DeliveryResult) -> StatusWrite | None:
        """The record of one result, None for one that leaves the record as it is."""
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
            log = LogEntry(r.finished_ms, f"{entry}:sent", Status.SENT, data)
        elif r.outcome is DeliveryOutcome.RETRY:
            state = self._state(r, Status.QUEUED)
            log = LogEntry(r.finished_ms, f"{entry}:attempt", Status.QUEUED, attempt_data)
        elif r.outcome is DeliveryOutcome.FAILED:
            state = self._state(r, Status.FAILED)
            log = LogEntry(r.finished_ms, f"{entry}:failed", Status.FAILED, attempt_data)
        elif r.error in ENDS_ABORTED:
            # Lazy purge: a pending message of a deleted (or vanished) app ends ABORTED, so no
            # message stays QUEUED forever. Not counted: an app that is gone schedules nothing
            # more, so its pending count is never read again; an abort was counted by ingest.
            state = self._state(r, Status.ABORTED)
            data = {"reason": ENDS_ABORTED[r.error]}
            log = LogEntry(r.finished_ms, f"{entry}:aborted", Status.ABORTED, data)
        else:
            return None  # other SKIPPED results (done, stale) leave the record as it is
        return StatusWrite(r.app_id, r.message_id, state, log)

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
