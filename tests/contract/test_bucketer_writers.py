"""The bucketer's two Writers on the same operations: `PortWriter` over the in-memory fakes (what
the bucketer's unit tests write through) and `CassandraBatchWriter` (production: the adapters'
statements, de-duplicated, in unlogged batches with per-statement timestamps) over Cassandra.
Both must leave the same records, listings, logs and bucket rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from cassandra.cluster import Session

from scheduler.domain.status import Status
from scheduler.records import DueMessage
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.ports import BucketStore, LogEntry, MessageContent, MessageStore, StatusUpdate
from scheduler.testing.fakes import InMemoryBucketStore, InMemoryMessageStore
from scheduler_bucketer.cassandra_batches import CassandraBatchWriter
from scheduler_bucketer.writer import (
    PortWriter,
    SaveRecord,
    StoreRow,
    WriteOp,
    Writer,
    WriteStatus,
)

from .conftest import _cassandra_adapter

T0 = 1_893_499_200_000
BUCKET = T0 + 600_000
LATER_BUCKET = BUCKET + 86_400_000
IDS = [f"01ARZ3NDEKTSV4RRFFQ69G5FE{i}" for i in range(7)]


@dataclass
class WriterWorld:
    writer: Writer
    messages: MessageStore
    buckets: BucketStore


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("cassandra", marks=pytest.mark.integration),
    ]
)
def world(request: pytest.FixtureRequest) -> Iterator[WriterWorld]:
    if request.param == "fake":
        messages, buckets = InMemoryMessageStore(), InMemoryBucketStore()
        writer: Writer = PortWriter(messages, buckets, concurrency=4)
        yield WriterWorld(writer, messages, buckets)
    else:
        messages = _cassandra_adapter("message_store", request)
        session: Session = request.getfixturevalue("cassandra_session")
        buckets = CassandraBucketStore(session)
        # small batches, so one batch of operations is cut into several requests
        writer = CassandraBatchWriter(
            session, messages, buckets, max_statements=3, max_bytes=2_000, concurrency=2
        )
        yield WriterWorld(writer, messages, CassandraBucketStore(session))
    writer.close()


def content(i: int, payload: str = '{"n":1}') -> MessageContent:
    return MessageContent("app-a", IDS[i], payload, T0 + 600_000, T0 + i, None, None, "kafka")


def state(status: Status, attempt: int = 1, **kw: object) -> StatusUpdate:
    return StatusUpdate(status, 0, attempt, T0 + 600_000, T0 + 10, **kw)  # type: ignore[arg-type]


def log(status: Status, entry: str) -> LogEntry:
    return LogEntry(T0 + 10, entry, status, {"by": entry})


def due(i: int) -> DueMessage:
    return DueMessage(
        message_id=IDS[i], app_id="app-a", generation=0, attempt=1, due_ms=BUCKET + i,
        send_at_ms=BUCKET + i, created_ms=T0 + i, payload_json='{"n":1}',
    )  # fmt: skip


def test_both_writers_leave_the_same_records_listings_logs_and_rows(world: WriterWorld) -> None:
    big = '"' + "x" * 3_000 + '"'  # above max_bytes: sent on its own
    by_client = state(Status.ABORTED, 1, lateness_ms=4, error="by client")
    by_deletion = state(Status.ABORTED, 2, error="app deleted")
    world.writer.submit(
        [
            SaveRecord(content(0), state(Status.READY), log(Status.READY, "scheduled")),
            SaveRecord(content(1), state(Status.READY), log(Status.READY, "scheduled")),
            SaveRecord(content(0), state(Status.READY), log(Status.READY, "scheduled")),  # replay
            WriteStatus("app-a", IDS[2], by_client, log(Status.ABORTED, "abort")),  # overtakes
            SaveRecord(content(2), state(Status.READY), log(Status.READY, "scheduled")),
            WriteStatus("app-a", IDS[1], by_client, log(Status.ABORTED, "api")),
            WriteStatus("app-a", IDS[1], by_deletion, log(Status.ABORTED, "deleted")),  # a tie
            SaveRecord(content(3, big), state(Status.READY), log(Status.READY, "scheduled")),
            StoreRow(BUCKET, 0, due(0)),
            StoreRow(BUCKET, 0, due(0)),  # replay
            StoreRow(BUCKET, 3, due(4)),
            StoreRow(LATER_BUCKET, 1, due(5)),
        ]
    )
    world.writer.drain()
    world.writer.submit(
        [WriteStatus("app-a", IDS[0], state(Status.QUEUED), log(Status.QUEUED, "q"))]
    )
    world.writer.drain()

    def status_of(i: int) -> StatusUpdate:
        view = world.messages.get("app-a", IDS[i])
        assert view is not None, IDS[i]
        return view.state

    assert status_of(0) == state(Status.QUEUED)
    assert status_of(1) == state(Status.ABORTED, 2, lateness_ms=None, error="by client")
    assert status_of(2) == by_client
    view = world.messages.get("app-a", IDS[3])
    assert view is not None and view.content == content(3, big)
    page = world.messages.list("app-a", None, None, 10)
    assert [v.content.message_id for v in page.items] == [IDS[3], IDS[2], IDS[1], IDS[0]]
    assert page.next_cursor is None
    assert [e.entry_id for e in world.messages.logs("app-a", IDS[1])] == [
        "api",
        "deleted",
        "scheduled",
    ]
    assert [e.data for e in world.messages.logs("app-a", IDS[0])] == [
        {"by": "q"},
        {"by": "scheduled"},
    ]
    assert world.buckets.partitions(BUCKET) == [("app-a", 0), ("app-a", 3)]
    assert list(world.buckets.read(BUCKET, "app-a", 0)) == [due(0)]
    assert list(world.buckets.read(BUCKET, "app-a", 3)) == [due(4)]
    assert world.buckets.stored_buckets(T0, LATER_BUCKET + 1, 10) == [BUCKET, LATER_BUCKET]


@pytest.mark.integration
def test_rows_that_many_messages_share_are_bound_once_per_drain(
    cassandra_session: Session, request: pytest.FixtureRequest
) -> None:
    """Binding is most of the bucketer's CPU: 50 messages of one app, day, bucket and partition,
    submitted in two chunks, bind their own record (content and status in one statement),
    listing and row, and the listing day, partition, bucket and day index rows once (not once
    per message or per chunk). After a drain (the next Kafka batch) they are bound again."""
    messages = _cassandra_adapter("message_store", request)
    writer = CassandraBatchWriter(
        cassandra_session,
        messages,
        CassandraBucketStore(cassandra_session),
        max_statements=50,
        max_bytes=40_000,
        concurrency=2,
    )

    def chunk(first: int, n: int) -> list[WriteOp]:
        ops: list[WriteOp] = []
        for i in range(first, first + n):
            message_id = f"01ARZ3NDEKTSV4RRFFQ69G{i:04d}"
            c = MessageContent("app-a", message_id, "{}", T0 + 600_000, T0, None, None, "kafka")
            ops.append(SaveRecord(c, state(Status.READY), log(Status.READY, "stored")))
            ops.append(StoreRow(BUCKET, 0, replace(due(0), message_id=message_id)))
        return ops

    first, second = list(writer._statements(chunk(0, 25))), list(writer._statements(chunk(25, 25)))
    assert (len(first), len(second)) == (25 * 3 + 1 + 3, 25 * 3)
    writer.drain()
    assert len(list(writer._statements(chunk(50, 1)))) == 3 + 1 + 3
