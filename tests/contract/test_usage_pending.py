"""Contract of the usage store's running pending count, for the fake and the Cassandra adapter:
ingested +n, sent/failed -n (with their daily columns), abort/redrive through add_pending."""

from __future__ import annotations

from scheduler.store.usage import UsageDay, UsageKind, UsageStore


def test_pending_follows_the_counted_events_per_app(usage_store: UsageStore) -> None:
    assert usage_store.pending("app-1") == 0
    usage_store.add("app-1", 100, UsageKind.INGESTED, 5)
    usage_store.add("app-1", 101, UsageKind.INGESTED, 2)
    usage_store.add("app-1", 101, UsageKind.SENT, 3)
    usage_store.add("app-1", 102, UsageKind.FAILED)
    usage_store.add_pending("app-1", -1)  # an abort
    usage_store.add_pending("app-1", +1)  # a redrive
    usage_store.add("app-2", 100, UsageKind.INGESTED, 4)
    assert usage_store.pending("app-1") == 3
    assert usage_store.pending("app-2") == 4
    assert usage_store.pending("app-3") == 0
    # The daily columns are moved as before.
    assert usage_store.read("app-1", 100, 102) == [
        UsageDay(102, failed=1),
        UsageDay(101, ingested=2, sent=3),
        UsageDay(100, ingested=5),
    ]


def test_pending_can_drift_below_zero_and_zero_moves_nothing(usage_store: UsageStore) -> None:
    usage_store.add("app-1", 100, UsageKind.SENT, 2)  # e.g. a replayed delivery result
    usage_store.add("app-1", 100, UsageKind.INGESTED, 0)
    usage_store.add_pending("app-1", 0)
    assert usage_store.pending("app-1") == -2
    assert usage_store.read("app-1", 100, 100) == [UsageDay(100, sent=2)]
