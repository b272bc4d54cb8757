"""Usage counting for the gateway: "ingested" per app and UTC day, added in memory and written
to the usage store every `usage_flush_ms` (one counter write per app and day per interval instead
of one per request; Cassandra counter writes are expensive). Counts are approximate anyway
(scheduler.store.usage): at most one interval of counts is lost if the process is killed, and
a failed write is retried with the next flush. `usage_flush_ms=0` writes through per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from scheduler.store.usage import UsageKind, UsageStore
from scheduler_ingest.io import BlockingIo

log = logging.getLogger("scheduler_ingest.usage")


class UsageCounter:
    def __init__(self, store: UsageStore, io: BlockingIo, flush_interval_ms: int) -> None:
        self._store = store
        self._io = io
        self._interval_s = flush_interval_ms / 1000.0
        self._pending: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    async def count(self, app_id: str, day: int, n: int) -> None:
        if self._interval_s <= 0:
            try:
                await self._io(self._store.add, app_id, day, UsageKind.INGESTED, n)
            except Exception as exc:  # noqa: BLE001 - usage is approximate, never fail a request
                log.warning("usage count failed: %r", exc)
            return
        with self._lock:
            self._pending[(app_id, day)] = self._pending.get((app_id, day), 0) + n

    def flush(self) -> None:
        """Write what was counted (blocking). A failed write is kept for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (app_id, day), n in pending.items():
            try:
                self._store.add(app_id, day, UsageKind.INGESTED, n)
            except Exception as exc:  # noqa: BLE001 - retried with the next flush
                log.warning("usage flush failed (kept for the next one): %r", exc)
                with self._lock:
                    self._pending[(app_id, day)] = self._pending.get((app_id, day), 0) + n

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._io(self.flush)

    def start(self) -> None:
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._io(self.flush)
