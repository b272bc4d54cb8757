"""Time buckets and shards: how stored messages are partitioned in Cassandra.

A stored message lives in the partition (bucket_start, app_id, shard). Buckets are fixed-width
windows of epoch ms; the shard spreads one application's bucket over several partitions so that
no partition grows without bound, and it is a pure function of the message id, so a replayed
write lands on the same row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

DAY_MS = 86_400_000
ERA_DAYS = 1_024  # days per partition of the index of days (`stored_days`)


def bucket_start(t_ms: int, width_ms: int) -> int:
    """Start of the bucket containing `t_ms` (floor to a multiple of `width_ms`)."""
    if width_ms <= 0:
        raise ValueError("bucket width must be positive")
    return t_ms - t_ms % width_ms


def buckets_between(start_ms: int, end_ms: int, width_ms: int) -> Iterator[int]:
    """Starts of every bucket that overlaps [start_ms, end_ms), in order."""
    if end_ms <= start_ms:
        return
    current = bucket_start(start_ms, width_ms)
    while current < end_ms:
        yield current
        current += width_ms


def shard_of(message_id: str, shard_count: int) -> int:
    """Stable shard in [0, shard_count) for a message id (same id, same shard, every process)."""
    if shard_count <= 0:
        raise ValueError("shard count must be positive")
    digest = hashlib.blake2b(message_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


def index_day(bucket_ms: int) -> int:
    """The UTC day of a bucket: the partition of the bucket index (`stored_buckets`)."""
    return bucket_ms // DAY_MS


def index_era(day: int) -> int:
    """The partition of the index of days (`stored_days`) that holds `day`."""
    return day // ERA_DAYS
