"""Abort, redrive and reschedule of stored messages through scheduler.commands."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from scheduler.records import Command, CommandKind
from scheduler.store.ports import LogEntry, StatusUpdate

from .support import CLOCK, COMMANDS, Stack, wait_until

pytestmark = pytest.mark.integration


def _command(stack: Stack, kind: CommandKind, message_id: str, generation: int, **kw: int) -> None:
    command = Command(
        message_id=message_id,
        app_id="app-it",
        kind=kind,
        generation=generation,
        issued_ms=CLOCK.now_ms(),
        **kw,
    )
    stack.produce([COMMANDS.encode(command)], stack.topics.commands, key=message_id.encode())


def _write_status(stack: Stack, message_id: str, status: Status, generation: int) -> None:
    """What ingest (abort, redrive) or the dispatcher (failure) writes to the record."""
    now = CLOCK.now_ms()
    stack.messages.update_status(
        "app-it",
        message_id,
        StatusUpdate(status, generation, 1, now, now),
        LogEntry(now, f"{generation}:1:{status.value.lower()}", status),
    )


def test_abort_and_redrive_apply_and_reschedule_is_refused(stack: Stack) -> None:
    now = CLOCK.now_ms()
    to_abort, to_reschedule, to_keep = (stack.request(now + 3_600_000) for _ in range(3))
    to_redrive = stack.request(now + 1_000)
    stack.produce_requests([to_abort, to_reschedule, to_keep, to_redrive])

    with stack.bucketer_thread():
        wait_until(lambda: len(stack.stored_ids()) == 3, 60, "3 stored rows")
        assert len(stack.ring_messages(expected=1)) == 1

        _write_status(stack, to_abort.message_id, Status.ABORTED, 0)
        _command(stack, CommandKind.ABORT, to_abort.message_id, 0)
        later = now + 7_200_000
        _command(stack, CommandKind.RESCHEDULE, to_reschedule.message_id, 1, send_at_ms=later)
        _write_status(stack, to_redrive.message_id, Status.FAILED, 0)
        _write_status(stack, to_redrive.message_id, Status.READY, 1)
        _command(stack, CommandKind.REDRIVE, to_redrive.message_id, 1)

        wait_until(
            lambda: to_abort.message_id not in stack.stored_ids(), 30, "the aborted row removed"
        )
        ring = stack.ring_messages(expected=2)
        wait_until(stack.committed_everything, 30, "offsets committed")

    assert sorted(stack.stored_ids()) == sorted([to_reschedule.message_id, to_keep.message_id])
    rows = list(
        stack.session.execute(
            "SELECT due_ms, generation FROM due_by_bucket WHERE message_id = %s ALLOW FILTERING",
            (to_reschedule.message_id,),
        )
    )
    assert [(r.due_ms, r.generation) for r in rows] == [(to_reschedule.send_at_ms, 0)]
    redriven = [m for m in ring if m.message_id == to_redrive.message_id and m.generation == 1]
    assert len(redriven) == 1 and redriven[0].payload_json == to_redrive.payload_json

    messages = stack.messages
    aborted = messages.get("app-it", to_abort.message_id)
    assert aborted is not None and aborted.state.status is Status.ABORTED
    kept = messages.get("app-it", to_reschedule.message_id)
    assert kept is not None and (kept.state.status, kept.state.generation) == (Status.READY, 0)
    assert kept.state.due_ms == to_reschedule.send_at_ms
    again = messages.get("app-it", to_redrive.message_id)
    assert again is not None and (again.state.status, again.state.generation) == (Status.QUEUED, 1)
