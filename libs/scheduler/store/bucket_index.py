"""Completing the index of non-empty buckets on a keyspace upgraded from a version without it.

A keyspace created with migration 0004 has a complete index from the start (`apply_migrations`
marks it). One upgraded to it holds buckets that writers of the previous version stored without
index entries, and those writers keep storing so until the rolling update has replaced them.
Until the index is complete the releaser visits every bucket (the previous version's walk), so
nothing they store is skipped. The backfill then:

1. checks that no writer of the previous version is still running: every member of the
   bucketer group and of the dispatcher's record-writer group must carry `INDEX_WRITER_TAG` in
   its Kafka client id (writers of this version set it; the previous version did not);
2. indexes every bucket that has a partition listing (a full scan of `bucket_partitions`: its
   cost follows the stored buckets, once per installation);
3. marks the index complete; from then on the releaser jumps over unindexed (empty) ranges.

The leading releaser runs it by itself while the index is incomplete (`Reconciler`: every few
minutes, once two checks in a row saw no old writer); `scheduler admin index-buckets` runs it by
hand.

A rollback to the previous version brings its writers back, and they store without index entries
again. So the index is marked incomplete again when the leading releaser sees an old writer in
the groups, or when `scheduler setup` finds the watermark above the claim (only a releaser of the
previous version moves the watermark without claiming first); the next backfill completes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.kafka.groups import Members
from scheduler.settings import KafkaSettings
from scheduler.store.ports import BucketStore

log = logging.getLogger(__name__)

# In the client id of every process that writes index entries with its stored buckets.
INDEX_WRITER_TAG = "bucket-index"


def writer_client_id(role: str) -> str:
    """The Kafka client id of a bucket writer of this version (bucketer, record writer)."""
    return f"scheduler-{role}.{INDEX_WRITER_TAG}"


def writer_groups(kafka: KafkaSettings, bucketer_group: str) -> list[str]:
    """The consumer groups whose members store buckets: the bucketers', and the dispatchers'
    record writers (a dispatcher stores retries; its record writer child stands for it)."""
    return [bucketer_group, f"{kafka.topic_prefix}record-writer"]


@dataclass(frozen=True)
class BackfillResult:
    indexed: int  # buckets at or after the watermark, now indexed
    below_watermark: int  # listed buckets the releaser has already passed (not indexed)


def old_writers(members: Members) -> list[str]:
    """Members of the writer groups that do not write index entries: "group/client id@host"."""
    return [
        f"{group}/{member.client_id}@{member.host}"
        for group, found in members.items()
        for member in found
        if INDEX_WRITER_TAG not in member.client_id
    ]


def backfill(buckets: BucketStore, now_ms: int) -> BackfillResult:
    """Index every listed bucket at or after the watermark, then mark the index complete.

    Call it only when no writer of the previous version runs (`old_writers`): a bucket such a
    writer stores afterwards would not be indexed."""
    watermark = buckets.watermark()
    indexed = below = 0
    for bucket in buckets.listed_buckets():
        if bucket < watermark:
            below += 1  # released already, or left by a crash between a drop's two deletes
            continue
        buckets.index_bucket(bucket)
        indexed += 1
    buckets.mark_index_complete(now_ms)
    log.info("bucket index complete: %d bucket(s) indexed", indexed)
    return BackfillResult(indexed=indexed, below_watermark=below)


def old_releaser_has_led(buckets: BucketStore) -> bool:
    """The watermark is above the claim: a releaser that does not claim (the previous version)
    has released since this version's last claim, so its writers may have run too."""
    return buckets.watermark() > buckets.claim_only() > 0


class Reconciler:
    """The leading releaser's bookkeeping, run every few minutes: mark the index incomplete while
    a writer of the previous version runs; backfill once two checks in a row saw none.

    Two checks, because a dispatcher is seen only through its record writer child: one check
    could fall in the second it takes to restart it (its static membership usually keeps it in
    the group meanwhile, but not always)."""

    def __init__(
        self,
        buckets: BucketStore,
        describe_groups: Callable[[Sequence[str]], Members],
        groups: Sequence[str],
    ) -> None:
        self._buckets = buckets
        self._describe_groups = describe_groups
        self._groups = list(groups)
        self._clean_checks = 0

    def check(self, now_ms: int) -> BackfillResult | None:
        """One check; returns the backfill's result when it ran. A failed group query raises
        and counts as a check that saw an old writer (the next check asks again)."""
        try:
            members = self._describe_groups(self._groups)
        except Exception:
            self._clean_checks = 0
            raise
        running = old_writers(members)
        complete = self._buckets.index_complete()
        if running:
            self._clean_checks = 0
            if complete:
                self._buckets.mark_index_incomplete()
                log.warning("a writer of the previous version runs: bucket index marked incomplete")
            log.info(
                "%d writer(s) of the previous version run (%s): walking every bucket until they"
                " are gone",
                len(running),
                ", ".join(running[:5]),
            )
            return None
        self._clean_checks += 1
        if complete or self._clean_checks < 2:
            return None
        return backfill(self._buckets, now_ms)
