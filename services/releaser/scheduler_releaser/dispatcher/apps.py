"""A short-lived cache in front of AppLookup: one Cassandra read per app per TTL, not per message.

A deleted app (tombstone) or a changed endpoint is seen within the TTL (default 1 s).
Concurrent lookups of the same app share one read (a burst of one app's messages after startup
would otherwise issue one read each).
"""

from __future__ import annotations

import asyncio

from scheduler.clock import Clock
from scheduler.store.ports import Application, AppLookup


class AppCache:
    def __init__(self, apps: AppLookup, clock: Clock, ttl_ms: int = 1_000) -> None:
        self._apps = apps
        self._clock = clock
        self._ttl = ttl_ms
        self._cache: dict[str, tuple[float, Application | None]] = {}
        self._inflight: dict[str, asyncio.Future[Application | None]] = {}

    async def get(self, app_id: str) -> Application | None:
        now = self._clock.monotonic_ms()
        hit = self._cache.get(app_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        pending = self._inflight.get(app_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Application | None] = asyncio.get_running_loop().create_future()
        self._inflight[app_id] = future
        try:
            app = await asyncio.to_thread(self._apps.get_app, app_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unobserved failure is not logged twice
            raise
        finally:
            del self._inflight[app_id]
        self._cache[app_id] = (now, app)
        future.set_result(app)
        return app
