"""Abort, redrive and reschedule of stored messages; stale and unknown commands."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from scheduler.records import CommandKind
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate

from .harness import Harness

pytestmark = pytest.mark.unit


def _set_status(h: Harness, message_id: str, status: Status, generation: int) -> None:
    """What ingest (abort, redrive) or the dispatcher (FAILED) wrote to the record."""
    view = h.messages.get("app-a", message_id)
    assert view is not None
    h.messages.update_status(
        "app-a",
        message_id,
        StatusUpdate(status, generation, 1, view.state.due_ms, h.clock.now_ms()),
        LogEntry(h.clock.now_ms(), f"{generation}:1:{status.value.lower()}", status),
    )


def test_abort_removes_the_stored_row_and_keeps_the_others() -> None:
    h = Harness()
    far = h.clock.now_ms() + 3_600_000
    keep, gone = h.request(far), h.request(far)
    h.process(h.record(keep), h.record(gone))
    _set_status(h, gone.message_id, Status.ABORTED, 0)

    h.process(h.command(CommandKind.ABORT, gone.message_id, generation=0))

    assert [m.message_id for m in h.stored()] == [keep.message_id]
    view = h.messages.get("app-a", gone.message_id)
    assert view is not None and view.state.status is Status.ABORTED  # never moved back
    assert h.metric("scheduler_bucketer_commands_total", kind="ABORT", outcome="applied") == 1


def test_abort_in_the_same_batch_as_its_request_wins() -> None:
    h = Harness()
    request = h.request(h.clock.now_ms() + 3_600_000)
    # Ingest wrote the record at POST time and ABORTED at the abort, before both records were
    # consumed here in one batch.
    now = h.clock.now_ms()
    content = MessageContent(
        "app-a", request.message_id, request.payload_json, request.send_at_ms, now
    )
    aborted = StatusUpdate(Status.ABORTED, 0, 1, request.send_at_ms, now)
    h.messages.save(content, aborted, LogEntry(now, "0:1:aborted", Status.ABORTED))

    h.process(h.record(request), h.command(CommandKind.ABORT, request.message_id, 0))

    assert h.stored() == []
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is Status.ABORTED


def test_an_abort_whose_record_was_lost_is_applied_again() -> None:
    # Found by trying the restore runbook: a Cassandra snapshot restored to S loses the ABORTED
    # that ingest wrote after S, and the bucketer's replay of the commands since S left those
    # records READY, so a long-horizon message aborted with a 200 would have been delivered.
    # Ingest publishes an abort only once its record shows ABORTED at that generation, so the
    # command alone is the evidence; precedence keeps a SENT record SENT.
    h = Harness()
    request = h.request(h.clock.now_ms() + 3_600_000)
    h.process(h.record(request))
    h.process(h.command(CommandKind.ABORT, request.message_id, 0))
    assert h.stored() == []
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is Status.ABORTED
    [entry] = [e for e in h.messages.logs("app-a", request.message_id) if e.entry_id == "0:aborted"]
    assert entry.data == {"by": "abort command"}
    outcome = h.metric("scheduler_bucketer_commands_total", kind="ABORT", outcome="reapplied")
    assert outcome == 1


@pytest.mark.parametrize(
    ("status", "generation"), [(Status.SENT, 0), (Status.FAILED, 0), (Status.READY, 1)]
)
def test_an_abort_the_record_has_moved_past_changes_nothing(
    status: Status, generation: int
) -> None:
    h = Harness()
    request = h.request(h.clock.now_ms() + 3_600_000)
    h.process(h.record(request))
    _set_status(h, request.message_id, status, generation)
    before = h.stored()
    h.process(h.command(CommandKind.ABORT, request.message_id, 0))
    assert h.stored() == before
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and view.state.status is status
    outcome = h.metric("scheduler_bucketer_commands_total", kind="ABORT", outcome="not_aborted")
    assert outcome == 1


def test_redrive_of_a_failed_message_re_enters_with_the_new_generation() -> None:
    h = Harness()
    request = h.request(h.clock.now_ms() + 1_000)
    h.process(h.record(request))
    _set_status(h, request.message_id, Status.FAILED, 0)
    h.clock.advance(60_000)
    _set_status(h, request.message_id, Status.READY, 1)  # ingest's redrive write

    h.process(h.command(CommandKind.REDRIVE, request.message_id, generation=1))

    sent = [due for _, due in h.direct() if due.generation == 1]
    assert len(sent) == 1 and sent[0].attempt == 1
    assert sent[0].due_ms == h.clock.now_ms()  # promptly: the command's issue time
    assert sent[0].payload_json == request.payload_json
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and (view.state.status, view.state.generation) == (Status.QUEUED, 1)


@pytest.mark.parametrize("send_at", [None, 500, 7_200_000])
def test_reschedule_is_refused_and_leaves_the_message_as_it_was(send_at: int | None) -> None:
    # An older copy already in the ring would fire at the old time beside the new generation:
    # RESCHEDULE is refused (it used to move the row and place a new generation).
    h = Harness()
    now = h.clock.now_ms()
    request = h.request(now + 3_600_000)
    h.process(h.record(request))
    before = h.stored()
    at = None if send_at is None else now + send_at
    h.process(h.command(CommandKind.RESCHEDULE, request.message_id, 1, send_at_ms=at))
    [rejection] = h.rejected()
    assert rejection.reason == "unsupported_command"
    assert h.stored() == before and h.direct() == []
    view = h.messages.get("app-a", request.message_id)
    assert view is not None and (view.state.status, view.state.generation) == (Status.READY, 0)
    assert (
        h.metric("scheduler_bucketer_commands_total", kind="RESCHEDULE", outcome="unsupported") == 1
    )


@pytest.mark.parametrize(
    ("status", "generation"),
    [(Status.SENT, 1), (Status.ABORTED, 1), (Status.READY, 2)],
)
def test_stale_commands_are_ignored(status: Status, generation: int) -> None:
    h = Harness()
    request = h.request(h.clock.now_ms() + 3_600_000)
    h.process(h.record(request))
    _set_status(h, request.message_id, status, generation)
    before = h.stored()

    h.process(h.command(CommandKind.REDRIVE, request.message_id, generation=1))

    assert h.stored() == before and h.direct() == []
    assert h.metric("scheduler_bucketer_commands_total", kind="REDRIVE", outcome="stale") == 1


def test_commands_for_unknown_messages_and_undecodable_commands() -> None:
    h = Harness()
    h.process(
        h.command(CommandKind.ABORT, "01J0000000000000000000000Z", 0),
        h.raw(b"junk", topic=h.topics.commands),
    )
    assert h.metric("scheduler_bucketer_commands_total", kind="ABORT", outcome="unknown") == 1
    [rejection] = h.rejected()
    assert rejection.reason == "not_avro" and rejection.source_topic == h.topics.commands
