"""Routing: straight to the due-minute ring, or into the bucket table (decision 2).

A message goes DIRECT when it is due within the look-ahead of now, or when its bucket is at or
below the releaser's watermark plus the margin (`scheduler.domain.placement.place`); otherwise it
is STORED. Both DIRECT cases fit in the ring: the watermark never runs ahead of now + look-ahead,
and the ring holds look-ahead + margin + one bucket (SchedulingSettings checks it). The "within
the look-ahead" half keeps near-term and past-due messages out of Cassandra even before the
releaser has published a watermark (e.g. on a fresh install), so nothing is stored in a bucket
that a newly started releaser would consider already behind it.
"""

from __future__ import annotations

from scheduler.clock import Clock
from scheduler.domain.buckets import bucket_start
from scheduler.domain.placement import Placement, place, released_meanwhile
from scheduler.domain.ring import Ring
from scheduler.settings import SchedulingSettings
from scheduler.store.ports import BucketStore


class Router:
    def __init__(
        self,
        buckets: BucketStore,
        scheduling: SchedulingSettings,
        ring: Ring,
        clock: Clock,
        watermark_cache_ms: int,
    ) -> None:
        self._buckets = buckets
        self._scheduling = scheduling
        self._ring = ring
        self._clock = clock
        self._cache_ms = watermark_cache_ms
        self._watermark = 0
        self._read_at: float | None = None

    def watermark(self, fresh: bool = False) -> int:
        """The release watermark, re-read from the store at most every `watermark_cache_ms`."""
        now = self._clock.monotonic_ms()
        if fresh or self._read_at is None or now - self._read_at >= self._cache_ms:
            # max(): a stale replica read must not move our view backwards either.
            self._watermark = max(self._watermark, self._buckets.watermark())
            self._read_at = now
        return self._watermark

    def near(self, due_ms: int, now_ms: int) -> bool:
        """Due within the look-ahead of now (or past due)."""
        return due_ms < now_ms + self._scheduling.lookahead_ms

    def place(self, due_ms: int, now_ms: int) -> Placement:
        if self.near(due_ms, now_ms):
            return Placement.DIRECT
        s = self._scheduling
        return place(due_ms, self.watermark(), s.placement_margin_ms, s.bucket_width_ms)

    def released(self, due_ms: int, watermark: int) -> bool:
        """After a durable store, with a fresh `watermark(fresh=True)`: was the bucket released
        meanwhile, so that the stored copy may have been missed? (decision 2)"""
        return released_meanwhile(due_ms, watermark, self._scheduling.bucket_width_ms)

    def bucket_of(self, due_ms: int) -> int:
        return bucket_start(due_ms, self._scheduling.bucket_width_ms)

    def due_topic(self, due_ms: int, now_ms: int) -> str:
        return self._ring.topic_for_send(due_ms, now_ms)
