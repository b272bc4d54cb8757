"""The MessageStore contract, with every `save` going through `CassandraMessageStore.save_many`
(the batched path ingest uses): precedence must hold inside unlogged batches too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from scheduler.clock import ManualClock
from scheduler.settings import CassandraSettings
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.migrate import apply_migrations
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from tests.contract.test_message_store import (
    test_a_later_attempt_beats_an_earlier_one,
    test_list_is_newest_first_paged_filtered_and_app_scoped,
    test_logs_are_ordered_and_replays_do_not_duplicate,
    test_optional_fields_are_cleared_by_a_winning_write,
    test_redrive_generation_beats_the_failed_one,
    test_save_then_get,
    test_status_never_moves_backwards_whatever_the_arrival_order,
    test_unknown_and_other_apps_messages_are_not_found,
    test_update_of_an_unknown_message_creates_nothing,
)

pytestmark = pytest.mark.integration

__all__ = [
    "test_a_later_attempt_beats_an_earlier_one",
    "test_list_is_newest_first_paged_filtered_and_app_scoped",
    "test_logs_are_ordered_and_replays_do_not_duplicate",
    "test_optional_fields_are_cleared_by_a_winning_write",
    "test_redrive_generation_beats_the_failed_one",
    "test_save_then_get",
    "test_status_never_moves_backwards_whatever_the_arrival_order",
    "test_unknown_and_other_apps_messages_are_not_found",
    "test_update_of_an_unknown_message_creates_nothing",
]


class BatchedSaves(CassandraMessageStore):
    def save(self, content: MessageContent, state: StatusUpdate, log: LogEntry) -> None:
        self.save_many([(content, state, log)])


@pytest.fixture
def message_store(
    cassandra_settings: CassandraSettings, cassandra_session: Session
) -> Iterator[CassandraMessageStore]:
    apply_migrations(cassandra_session, cassandra_settings, ManualClock().now_ms())
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    yield BatchedSaves(cassandra_session)


def test_large_payloads_are_saved_outside_batches(message_store: CassandraMessageStore) -> None:
    """Cassandra fails multi-partition batches above batch_size_fail_threshold (50 KiB by
    default); a payload near the 256 KiB limit must still be saved."""
    from scheduler.domain.status import Status

    big = '"' + "x" * 200_000 + '"'
    items = [
        (
            MessageContent("app-big", f"01BIG{i:021d}", big if i % 2 else "1", 10**12, 10**12),
            StatusUpdate(Status.READY, 0, 1, 10**12, 10**12),
            LogEntry(10**12, "0:1:scheduled", Status.READY),
        )
        for i in range(4)
    ]
    message_store.save_many(items, per_batch=3)
    for content, _, _ in items:
        view = message_store.get("app-big", content.message_id)
        assert view is not None and view.content.payload_json == content.payload_json
    assert len(message_store.list("app-big", None, None, 10).items) == 4
