"""The per-app cap on pending messages, for requests that did not come through ingest.

Ingest checks the cap and counts what it accepts (source "http"). Kafka-native producers write
to the requests topic directly, so the bucketer does both for every other source: it counts the
accepted ones as ingested (the usage store's daily column and the app's pending count, after
the batch is durable) and refuses a request that would take its app past the cap, to the
rejected topic with the reason `pending_limit_exceeded`, as for any invalid request.

The app's figure is read from the usage store at most once per `refresh_ms` and cached; what
this bucketer admitted since then is added on top. A request about to be refused whose record
already exists is admitted instead: it is a replay (a batch retried after a failure, or a
producer retry) of one accepted before, whose message is stored and will be delivered.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.clock import Clock
from scheduler.records import ScheduleRequest
from scheduler.store.ports import MessageStore
from scheduler.store.usage import UsageKind, UsageStore, usage_day

from .intake import Accepted, Rejection

log = logging.getLogger("scheduler_bucketer.pending_cap")

INGEST_SOURCE = "http"  # checked and counted by ingest already
PENDING_LIMIT_EXCEEDED = "pending_limit_exceeded"
_MAX_TRACKED = 100_000  # apps cached at most (LRU)


@dataclass
class _Reading:
    stored: int
    read_at: float  # monotonic ms
    admitted: int = 0  # admitted here since the read


class PendingCapGate:
    def __init__(
        self,
        usage: UsageStore,
        messages: MessageStore,
        clock: Clock,
        limit: int | None,
        refresh_ms: int,
    ) -> None:
        """`limit` None: no cap (requests are still counted)."""
        self._usage = usage
        self._messages = messages
        self._clock = clock
        self._limit = limit
        self._refresh_ms = refresh_ms
        self._readings: OrderedDict[str, _Reading] = OrderedDict()

    def check(self, chunk: Sequence[Accepted]) -> list[Rejection | None]:
        """Per request, in order: None, admitted (and reserved), or the rejection to publish.
        The replay check of the requests over the cap is one store call for the chunk, so a
        producer far over its cap does not slow the partitions it shares with other apps."""
        verdicts: list[Rejection | None] = [None] * len(chunk)
        over: list[tuple[int, _Reading]] = []
        for i, accepted in enumerate(chunk):
            request = accepted.request
            if self._limit is None or request.source == INGEST_SOURCE:
                continue
            reading = self._reading(request.app_id)
            if max(0, reading.stored) + reading.admitted + 1 <= self._limit:
                reading.admitted += 1
            else:
                over.append((i, reading))
        if not over:
            return verdicts
        replays = self._messages.recorded(
            [(chunk[i].request.app_id, chunk[i].request.message_id) for i, _ in over]
        )
        for i, reading in over:
            request = chunk[i].request
            if (request.app_id, request.message_id) in replays:
                reading.admitted += 1
                continue
            verdicts[i] = Rejection(
                chunk[i].record,
                PENDING_LIMIT_EXCEEDED,
                f"application {request.app_id!r} has about"
                f" {max(0, reading.stored) + reading.admitted} messages pending (accepted, not"
                f" yet sent, failed or aborted); its cap is {self._limit}",
                request.app_id,
                request.message_id,
            )
        return verdicts

    def count(self, requests: Sequence[ScheduleRequest]) -> None:
        """Count the batch's durable requests that ingest did not count (approximate: a failed
        write is logged and lost, a retried batch counts again)."""
        by_day: dict[tuple[str, int], int] = {}
        for r in requests:
            if r.source != INGEST_SOURCE:
                key = (r.app_id, usage_day(r.created_ms))
                by_day[key] = by_day.get(key, 0) + 1
        for (app_id, day), n in by_day.items():
            try:
                self._usage.add(app_id, day, UsageKind.INGESTED, n)
            except Exception as exc:  # noqa: BLE001 - approximate; never fail the batch for it
                log.warning("ingested count of %s (+%d) lost: %r", app_id, n, exc)

    def _reading(self, app_id: str) -> _Reading:
        now = self._clock.monotonic_ms()
        reading = self._readings.get(app_id)
        if reading is None or now - reading.read_at >= self._refresh_ms:
            try:
                reading = _Reading(self._usage.pending(app_id), now)
            except Exception as exc:  # noqa: BLE001 - fail open on the old figure
                log.warning("pending count of %s could not be read: %r", app_id, exc)
                reading = reading or _Reading(0, now)
                reading.read_at = now
            self._readings[app_id] = reading
        self._readings.move_to_end(app_id)
        while len(self._readings) > _MAX_TRACKED:
            self._readings.popitem(last=False)
        return reading
