"""Placement: one rule and one claim (ARCHITECTURE decision 2, as amended).

The releaser claims buckets before it lists them: `claimed_up_to_ms` is durable before the
releaser reads the index or the partitions of any bucket that starts before it. A message whose
bucket starts before the claim plus a margin goes straight to its due-minute topic; every other
message is stored in Cassandra and released later.

After its write is durable, every store re-checks the claim (`claimed`). Either the releaser's
listing, which comes after its claim, sees the stored row, or the store's re-check, which comes
after the row is durable, sees the claim and sends the message directly: a stored message is
never stranded (docs/ARCHITECTURE.md, "The release path: claim, index, fencing").
"""

from __future__ import annotations

from enum import Enum

from scheduler.domain.buckets import bucket_start


class Placement(Enum):
    DIRECT = "direct"  # produce to the due-minute topic now (status QUEUED)
    STORE = "store"  # write to the bucket table (status READY); the releaser sends it later


def place(due_ms: int, claimed_up_to_ms: int, margin_ms: int, bucket_width_ms: int) -> Placement:
    if bucket_start(due_ms, bucket_width_ms) < claimed_up_to_ms + margin_ms:
        return Placement.DIRECT
    return Placement.STORE


def claimed(due_ms: int, claimed_up_to_ms: int, bucket_width_ms: int) -> bool:
    """After a durable store, with a fresh claim: has the releaser claimed this message's bucket?

    Then its listing may have missed the stored copy, so the message must also be sent directly
    (duplicates are removed downstream by (message id, generation, attempt)).
    """
    return bucket_start(due_ms, bucket_width_ms) < claimed_up_to_ms
