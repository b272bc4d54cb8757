"""Routing: straight to the due-minute ring, or into the bucket table (decision 2).

A message goes DIRECT when it is due within the look-ahead of now, or when its bucket is below
the releaser's claim plus the margin (`scheduler.domain.placement.place`); otherwise it is
STORED. Both DIRECT cases fit in the ring: the claim never runs ahead of now + look-ahead,
and the ring holds look-ahead + margin + one bucket (SchedulingSettings checks it). The "within
the look-ahead" half keeps near-term and past-due messages out of Cassandra even before the
releaser has claimed anything (e.g. on a fresh install).
"""

from __future__ import annotations

from scheduler.clock import Clock
from scheduler.domain.buckets import bucket_start
from scheduler.domain.placement import Placement, claimed, place
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
        self._claimed_up_to = 0
        self._read_at: float | None = None

    def claimed_up_to(self, fresh: bool = False) -> int:
        """The releaser's claim, re-read from the store at most every `watermark_cache_ms`
        (always with `fresh`: the re-check after a durable store)."""
        now = self._clock.monotonic_ms()
        if fresh or self._read_at is None or now - self._read_at >= self._cache_ms:
            # max(): the claim only grows; an older view must not move ours backwards.
            self._claimed_up_to = max(self._claimed_up_to, self._buckets.claimed_up_to())
            self._read_at = now
        return self._claimed_up_to

    def near(self, due_ms: int, now_ms: int) -> bool:
        """Due within the look-ahead of now (or past due)."""
        return due_ms < now_ms + self._scheduling.lookahead_ms

    def place(self, due_ms: int, now_ms: int) -> Placement:
        if self.near(due_ms, now_ms):
            return Placement.DIRECT
        s = self._scheduling
        return place(due_ms, self.claimed_up_to(), s.placement_margin_ms, s.bucket_width_ms)

    def claimed(self, due_ms: int, claimed_up_to: int) -> bool:
        """After a durable store, with a fresh `claimed_up_to(fresh=True)`: did a releaser claim
        the bucket meanwhile, so that its listing may have missed the stored copy?"""
        return claimed(due_ms, claimed_up_to, self._scheduling.bucket_width_ms)

    def bucket_of(self, due_ms: int) -> int:
        return bucket_start(due_ms, self._scheduling.bucket_width_ms)

    def due_topic(self, due_ms: int, now_ms: int) -> str:
        return self._ring.topic_for_send(due_ms, now_ms)
