"""The per-application cap on pending messages (ARCHITECTURE.md "Backpressure").

Pending = accepted and not yet SENT, FAILED or ABORTED. The shared figure is the running counter
of the usage store (`scheduler.store.usage`: ingested + redriven - sent - failed - aborted),
read at most once per `refresh_ms` per app on this replica and cached. What this replica did
since that read is added on top, so one replica alone never lets an app past its cap:

    pending(app) = max(0, stored) + unflushed + reserved + adjusted

- `unflushed`: messages already counted by this replica's UsageCounter, not yet written;
- `reserved`: requests that passed the check and are being published (taken under the check,
  released when the route is done: a published one is then in `unflushed` or in the store, a
  refused one nowhere), so concurrent requests cannot all pass on the same reading;
- `adjusted`: what this replica wrote to the store since the read (its flushed usage counts,
  its aborts and redrives), which the cached figure does not show until the next read.

Other replicas' writes are seen at the next read: with R replicas the cap can be overshot by at
most what the others accept in one refresh interval plus one usage flush interval. A failed read
keeps the previous figure (0 if none: the cap fails open while Cassandra is unreachable; the
message path through Kafka does not need Cassandra) and is retried after `refresh_ms`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from scheduler.clock import Clock
from scheduler_ingest.errors import ApiError

log = logging.getLogger("scheduler_ingest.pending")

PENDING_LIMIT_EXCEEDED = "pending_limit_exceeded"
_MAX_TRACKED = 100_000  # apps cached at most (LRU); an evicted app is simply read again


@dataclass
class _Reading:
    stored: int  # the store's figure at the last read
    read_at: float  # monotonic ms of that read
    adjusted: int = 0  # written here since the read: ingested (+n), aborts (-1), redrives (+1)


class PendingCap:
    def __init__(
        self,
        *,
        read: Callable[[str], Awaitable[int]],
        unflushed: Callable[[str], int],
        clock: Clock,
        limit: int | None,
        refresh_ms: int,
    ) -> None:
        """`read(app)` fetches the store's figure; `unflushed(app)` is what this replica
        counted as ingested but has not written yet. `limit` None: no cap."""
        self._read = read
        self._unflushed = unflushed
        self._clock = clock
        self._limit = limit
        self._refresh_ms = refresh_ms
        self._readings: OrderedDict[str, _Reading] = OrderedDict()
        self._reserved: dict[str, int] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        # `adjust` is also called from the usage counter's writing thread.
        self._lock = threading.Lock()

    def retry_after_s(self) -> int:
        """When asking again can first give another answer: after the next read."""
        return max(1, math.ceil(self._refresh_ms / 1000))

    async def take(self, app_id: str, n: int = 1) -> None:
        """Reserve `n` messages of the app's room or raise a 429 (reserving nothing).
        Every successful take must be followed by `release(app_id, n)`."""
        if self._limit is None or n <= 0:
            return
        await self._fresh(app_id)
        # No await between the check and the reservation: concurrent requests see each other.
        with self._lock:
            current = self._pending(app_id)
            if current + n <= self._limit:
                self._reserved[app_id] = self._reserved.get(app_id, 0) + n
                return
        raise ApiError(
            429,
            PENDING_LIMIT_EXCEEDED,
            f"this application has about {current} messages pending (accepted, not yet sent,"
            f" failed or aborted); {n} more would exceed its cap of {self._limit}",
            {"Retry-After": str(self.retry_after_s())},
        )

    def release(self, app_id: str, n: int = 1) -> None:
        """The request that took `n` is done: published ones are counted by the usage counter
        by now, refused ones are not pending."""
        if self._limit is None or n <= 0:
            return
        with self._lock:
            left = self._reserved.get(app_id, 0) - n
            if left > 0:
                self._reserved[app_id] = left
            else:
                self._reserved.pop(app_id, None)

    def adjust(self, app_id: str, delta: int) -> None:
        """This replica wrote `delta` to the app's stored count (ingested, abort, redrive). With
        no reading cached there is nothing to correct: the next read includes it."""
        with self._lock:
            reading = self._readings.get(app_id)
            if reading is not None:
                reading.adjusted += delta

    def pending(self, app_id: str) -> int:
        """This replica's view of the app's pending count."""
        with self._lock:
            return self._pending(app_id)

    def _pending(self, app_id: str) -> int:
        reading = self._readings.get(app_id)
        stored, adjusted = (max(0, reading.stored), reading.adjusted) if reading else (0, 0)
        total = stored + adjusted + self._unflushed(app_id) + self._reserved.get(app_id, 0)
        return max(0, total)

    async def _fresh(self, app_id: str) -> None:
        now = self._clock.monotonic_ms()
        with self._lock:
            reading = self._readings.get(app_id)
            if reading is not None and now - reading.read_at < self._refresh_ms:
                self._readings.move_to_end(app_id)
                return
        task = self._refreshing.get(app_id)
        if task is None:  # one read per app at a time; concurrent requests wait for it
            task = asyncio.get_running_loop().create_task(self._refresh(app_id))
            self._refreshing[app_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(app_id, None))
        await asyncio.shield(task)

    async def _refresh(self, app_id: str) -> None:
        with self._lock:
            before = self._readings.get(app_id)
            adjusted_before = before.adjusted if before is not None else 0
        started = self._clock.monotonic_ms()
        try:
            stored: int | None = await self._read(app_id)
        except Exception as exc:  # noqa: BLE001 - fail open on the old figure, read again later
            log.warning("pending count of %s could not be read: %r", app_id, exc)
            stored = None
        with self._lock:
            current = self._readings.get(app_id)
            adjusted = current.adjusted if current is not None else 0
            if stored is None:  # keep the old figure and everything done since it was read
                stored = before.stored if before is not None else 0
            else:  # what was written while the read was under way may be missing: keep it
                adjusted -= adjusted_before
            self._readings[app_id] = _Reading(stored, started, adjusted)
            self._readings.move_to_end(app_id)
            while len(self._readings) > _MAX_TRACKED:
                self._readings.popitem(last=False)
