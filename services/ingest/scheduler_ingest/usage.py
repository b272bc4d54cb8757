"""Usage counting for the gateway: "ingested" per app and UTC day, added in memory and written
to the usage store every `usage_flush_ms` (one counter write per app and day per interval instead
of one per request; Cassandra counter writes are expensive). Counts are approximate anyway
(scheduler.store.usage): at most one interval of counts is lost if the process is killed, and
a failed write is retried with the next flush. `usage_flush_ms=0` writes through per request.

Each write also moves the app's pending count (scheduler.store.usage). `unflushed(app)` is what
was counted here and is not in the store yet (buffered, or being written), for the pending cap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from scheduler.store.usage import UsageKind, UsageStore
from scheduler.tasks import cancel_and_wait
from scheduler_ingest.io import BlockingIo

log = logging.getLogger("scheduler_ingest.usage")


class UsageCounter:
    def __init__(
        self,
        store: UsageStore,
        io: BlockingIo,
        flush_interval_ms: int,
        on_written: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_written(app, n)`: n ingested messages of the app just reached the store (called
        from the writing thread)."""
        self._store = store
        self._on_written = on_written or (lambda _app, _n: None)
        self._io = io
        self._interval_s = flush_interval_ms / 1000.0
        self._pending: dict[tuple[str, int], int] = {}
        self._unflushed: dict[str, int] = {}  # per app: buffered + being written
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    async def count(self, app_id: str, day: int, n: int) -> None:
        self._track(app_id, n)
        if self._interval_s <= 0:
            try:
                await self._io(self._store.add, app_id, day, UsageKind.INGESTED, n)
            except Exception as exc:  # noqa: BLE001 - usage is approximate, never fail a request
                log.warning("usage count failed: %r", exc)
            else:
                self._on_written(app_id, n)
            finally:
                self._track(app_id, -n)
            return
        with self._lock:
            self._pending[(app_id, day)] = self._pending.get((app_id, day), 0) + n

    async def move_pending(self, app_id: str, delta: int) -> None:
        """An abort (-1) or redrive (+1): written at once (rare, and the cap wants it soon)."""
        try:
            await self._io(self._store.add_pending, app_id, delta)
        except Exception as exc:  # noqa: BLE001 - approximate, never fail the request for it
            log.warning("pending count of %s not moved by %d: %r", app_id, delta, exc)

    def unflushed(self, app_id: str) -> int:
        with self._lock:
            return self._unflushed.get(app_id, 0)

    def _track(self, app_id: str, n: int) -> None:
        with self._lock:
            left = self._unflushed.get(app_id, 0) + n
            if left > 0:
                self._unflushed[app_id] = left
            else:
                self._unflushed.pop(app_id, None)

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
            else:
                self._on_written(app_id, n)  # before untracking: counted twice, never missed
                self._track(app_id, -n)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._io(self.flush)

    def start(self) -> None:
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)
        await self._io(self.flush)
