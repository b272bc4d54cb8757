"""How `CassandraMessageStore` writes a new message's record: its content and first status in one
statement (one partition write), the content cells stamped with the status's precedence. Records
written by the previous version (content with wall-clock timestamps, the status apart) stay
readable, and either version may replay the other's write (a rolling upgrade)."""

from __future__ import annotations

from typing import Any

import pytest
from cassandra.cluster import Session
from cassandra.query import BatchStatement

from scheduler.domain.status import Status
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate

from .conftest import _cassandra_adapter

pytestmark = pytest.mark.integration

T0 = 1_893_499_200_000
APP = "app-rw"


def _item(message_id: str, status: Status = Status.READY, stored: bool = False) -> Any:
    content = MessageContent(APP, message_id, '{"n":1}', T0 + 60_000, T0, "key-1", None, "http")
    state = StatusUpdate(status, 0, 1, T0 + 60_000, T0 + 5, stored=stored)
    word = "scheduled" if not stored else "stored"
    return content, state, LogEntry(T0 + 5, f"0:1:{word}", status, {"by": word})


def _previous_version_save(session: Session, item: Any) -> None:
    """`save` as the version before one statement per record wrote it: the content INSERT with
    the driver's (wall-clock) timestamp, the status and its log entry in an UPDATE apart."""
    content, state, log = item
    session.execute(
        "INSERT INTO messages (app_id, message_id, payload_json, send_at_ms, created_ms,"
        " idempotency_key, kafka_key, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (content.app_id, content.message_id, content.payload_json, content.send_at_ms,
         content.created_ms, content.idempotency_key, content.kafka_key, content.source),
    )  # fmt: skip
    update = session.prepare(
        "UPDATE messages USING TIMESTAMP ? SET status = ?, generation = ?, attempt = ?,"
        " due_ms = ?, updated_ms = ?, log_entries[?] = ? WHERE app_id = ? AND message_id = ?"
    )
    session.execute(
        update,
        (state.precedence, state.status.value, state.generation, state.attempt, state.due_ms,
         state.at_ms, (log.at_ms, log.entry_id), (log.status.value, '{"by":"scheduled"}'),
         content.app_id, content.message_id),
    )  # fmt: skip


@pytest.fixture
def store(request: pytest.FixtureRequest) -> CassandraMessageStore:
    store: CassandraMessageStore = _cassandra_adapter("message_store", request)
    return store


def test_a_new_record_is_one_statement_beside_its_listing_rows(
    store: CassandraMessageStore,
) -> None:
    (batch,) = store.save_requests([_item("01ARZ3NDEKTSV4RRFFQ69G5RW1")], per_batch=1)
    assert isinstance(batch, BatchStatement)
    # the record (content + status + log entry), its listing row, its listing day
    assert len(batch._statements_and_parameters) == 3


@pytest.mark.parametrize("previous_first", [True, False], ids=["old-then-new", "new-then-old"])
def test_a_record_of_the_previous_version_and_a_replay_by_this_one_read_the_same(
    store: CassandraMessageStore, cassandra_session: Session, previous_first: bool
) -> None:
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5RW2" if previous_first else "01ARZ3NDEKTSV4RRFFQ69G5RW3"
    accepted = _item(message_id)
    stored = _item(message_id, Status.READY, stored=True)
    if previous_first:
        _previous_version_save(cassandra_session, accepted)
        store.save(*stored)
    else:
        store.save(*stored)
        _previous_version_save(cassandra_session, accepted)
    view = store.get(APP, message_id)
    assert view is not None
    assert view.content == accepted[0]
    assert view.state == stored[1]  # the stored READY outranks the accepted one either way
    assert [e.entry_id for e in store.logs(APP, message_id)] == ["0:1:scheduled", "0:1:stored"]
    assert [v.content.message_id for v in store.list(APP, None, None, 10).items] == [message_id]


def test_a_status_written_before_the_content_stays_hidden_until_the_record_is_saved(
    store: CassandraMessageStore,
) -> None:
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5RW4"
    sent = StatusUpdate(Status.SENT, 0, 1, T0 + 60_000, T0 + 61_000)
    store.update_status(APP, message_id, sent, LogEntry(T0 + 61_000, "0:1:sent", Status.SENT, {}))
    assert store.get(APP, message_id) is None
    store.save(*_item(message_id))  # the accepted READY loses to SENT, the content is kept
    view = store.get(APP, message_id)
    assert view is not None and view.state == sent and view.content.payload_json == '{"n":1}'
