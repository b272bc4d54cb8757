"""Contract of the dispatcher's StatusReader: the in-memory fake the unit tests fire with, and
CassandraStatusReader over what CassandraMessageStore wrote."""

from __future__ import annotations

from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate

from .conftest import StatusWorld

T0 = 1_893_499_200_000


def _content(message_id: str) -> MessageContent:
    return MessageContent("app-a", message_id, '{"n":1}', T0 + 60_000, T0)


def _state(status: Status, generation: int = 0, attempt: int = 1) -> StatusUpdate:
    return StatusUpdate(status, generation, attempt, due_ms=T0 + 60_000, at_ms=T0)


def _log(status: Status) -> LogEntry:
    return LogEntry(T0, f"0:1:{status.value}", status)


def _group(s: StatusUpdate) -> tuple[Status, int, int, int]:
    return s.status, s.generation, s.attempt, s.due_ms


def test_saved_records_give_their_status_group(status_world: StatusWorld) -> None:
    ids = ["01ARZ3NDEKTSV4RRFFQ69G5FD0", "01ARZ3NDEKTSV4RRFFQ69G5FD1"]
    status_world.store.save(_content(ids[0]), _state(Status.READY), _log(Status.READY))
    status_world.store.save(_content(ids[1]), _state(Status.QUEUED, 1, 2), _log(Status.QUEUED))
    found = status_world.reader.states("app-a", [*ids, "01ARZ3NDEKTSV4RRFFQ69G5FD9"])
    assert {k: _group(v) for k, v in found.items()} == {
        ids[0]: _group(_state(Status.READY)),
        ids[1]: _group(_state(Status.QUEUED, 1, 2)),
    }
    assert status_world.reader.states("app-b", ids) == {}


def test_a_status_that_arrived_before_its_content_is_returned(status_world: StatusWorld) -> None:
    # A SENT or ABORTED result can overtake the content write (results and records travel
    # separately): the fire-time check must see it, or the message is delivered again.
    message_id = "01ARZ3NDEKTSV4RRFFQ69G5FD2"
    aborted = _state(Status.ABORTED, attempt=2)
    status_world.store.update_status("app-a", message_id, aborted, _log(Status.ABORTED))
    assert status_world.store.get("app-a", message_id) is None  # the view still hides it
    found = status_world.reader.states("app-a", [message_id])
    assert {k: _group(v) for k, v in found.items()} == {message_id: _group(aborted)}
