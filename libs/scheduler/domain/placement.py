"""Placement: one rule and one watermark (ARCHITECTURE decision 2).

The releaser publishes `released_up_to_ms`: every bucket that starts before it has been released
into the due-minute topics. A message whose bucket starts before the watermark plus a margin goes
straight to its due-minute topic; every other message is stored in Cassandra and released later.
"""

from __future__ import annotations

from enum import Enum

from scheduler.domain.buckets import bucket_start


class Placement(Enum):
    DIRECT = "direct"  # produce to the due-minute topic now (status QUEUED)
    STORE = "store"  # write to the bucket table (status READY); the releaser sends it later


def place(due_ms: int, released_up_to_ms: int, margin_ms: int, bucket_width_ms: int) -> Placement:
    if bucket_start(due_ms, bucket_width_ms) < released_up_to_ms + margin_ms:
        return Placement.DIRECT
    return Placement.STORE


def released_meanwhile(due_ms: int, released_up_to_ms: int, bucket_width_ms: int) -> bool:
    """After storing: has the releaser passed this message's bucket since we last looked?

    Then the stored copy may have been missed and the message must also be sent directly
    (duplicates are removed downstream by (message id, generation, attempt)).
    """
    return bucket_start(due_ms, bucket_width_ms) < released_up_to_ms
