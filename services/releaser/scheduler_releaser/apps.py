"""A short-lived cache in front of AppLookup: one Cassandra read per app per TTL, not per message.

A deleted app (tombstone) or a changed endpoint is seen within the TTL (default 1 s).
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

    async def get(self, app_id: str) -> Application | None:
        now = self._clock.monotonic_ms()
        hit = self._cache.get(app_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        app = await asyncio.to_thread(self._apps.get_app, app_id)
        self._cache[app_id] = (now, app)
        return app
