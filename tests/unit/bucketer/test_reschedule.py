"""What the bucketer does with a reschedule: ingest's ABORT of the current generation (with its due
instant) then REDRIVE of the next one (due at the new sendAt). The new generation is placed at
the new due instant and the old generation's stored row is removed, so it is never released;
an old bucketer (previous_commands.py) places the new generation alike.

The ingest side is the real app (its fakes share this message store and clock): the commands
are the bytes its routes published."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from scheduler.domain.status import Status
from scheduler.records import Command, CommandKind, DueMessage
from scheduler.store.ports import Application, LogEntry, StatusUpdate
from scheduler.testing.fakes import InMemoryApps
from scheduler_bucketer.intake import InputRecord
from tests.unit.ingest.harness import Harness as Ingest

from .harness import APP, Harness
from .previous_commands import CommandHandler as PreviousCommandHandler

pytestmark = pytest.mark.unit

HOUR = 3_600_000


@dataclass
class Rig:
    ingest: Ingest
    bucketer: Harness
    forwarded: int = 0  # ingest records already handed to the bucketer

    @property
    def app_id(self) -> str:
        return self.ingest.alice.app_id

    def schedule(self, send_at_ms: int) -> str:
        r = self.ingest.schedule({"payload": {"n": 1}, "sendAt": send_at_ms})
        assert r.status_code == 200, r.text
        return str(r.json()["messageId"])

    def reschedule(self, message_id: str, send_at_ms: int) -> None:
        r = self.ingest.client.put(
            f"/messages/{message_id}/reschedule",
            json={"sendAt": send_at_ms},
            headers=self.ingest.alice.data,
        )
        assert r.status_code == 200, r.text

    def pending_records(self) -> list[InputRecord]:
        """What ingest published since the last call, as the bucketer consumes it."""
        published = self.ingest.published()[self.forwarded :]
        self.forwarded += len(published)
        return [self.bucketer.raw(p.value, topic=p.topic) for p in published]

    def forward(self) -> None:
        self.bucketer.process(*self.pending_records())

    def commands(self) -> list[Command]:
        return self.ingest.published_commands()

    def state(self, message_id: str) -> StatusUpdate:
        view = self.bucketer.messages.get(self.app_id, message_id)
        assert view is not None
        return view.state

    def stored(self, message_id: str) -> list[tuple[int, int]]:
        """(generation, due) of the message's stored rows."""
        return [
            (m.generation, m.due_ms) for m in self.bucketer.stored() if m.message_id == message_id
        ]

    def direct(self, message_id: str) -> list[DueMessage]:
        return [m for _, m in self.bucketer.direct() if m.message_id == message_id]

    def outcome(self, kind: str, outcome: str) -> float:
        return self.bucketer.metric("scheduler_bucketer_commands_total", kind=kind, outcome=outcome)


@pytest.fixture
def rig() -> Iterator[Rig]:
    ingest = Ingest()
    app = Application(
        app_id=ingest.alice.app_id, owner_id="o", name="a", type="REST", endpoint=APP.endpoint
    )
    bucketer = Harness(
        clock=ingest.clock,
        messages=ingest.messages,  # type: ignore[arg-type]
        apps=InMemoryApps(app),
        topics=ingest.topics,
    )
    yield Rig(ingest, bucketer)
    ingest.close()


def test_the_new_generation_is_stored_at_the_new_time_and_the_old_row_removed(rig: Rig) -> None:
    old, new = rig.ingest.clock.now_ms() + HOUR, rig.ingest.clock.now_ms() + 2 * HOUR
    message_id = rig.schedule(old)
    rig.forward()
    assert rig.stored(message_id) == [(0, old)]
    # The usual case: ingest has recorded generation 1 by the time the bucketer reads the
    # ABORT of generation 0 (it records it right after the REDRIVE is acknowledged).
    rig.reschedule(message_id, new)
    assert (rig.state(message_id).status, rig.state(message_id).generation) == (Status.READY, 1)
    rig.forward()

    assert rig.stored(message_id) == [(1, new)]  # the old row is gone: it is never released
    assert rig.outcome("ABORT", "old_generation_removed") == 1
    assert rig.outcome("REDRIVE", "applied") == 1
    state = rig.state(message_id)
    assert (state.status, state.generation, state.attempt, state.due_ms) == (
        Status.READY,
        1,
        1,
        new,
    )
    assert rig.bucketer.direct() == [] and rig.bucketer.rejected() == []


def test_the_new_generation_carries_its_own_send_at(rig: Rig) -> None:
    """An app's maxEventAgeMs counts from the row's sendAt (the dispatcher's age_start_ms): the
    new generation's, not generation 0's, or a message moved a day later would be expired when
    it comes due. The same for a redrive, due at once."""
    now = rig.ingest.clock.now_ms()
    message_id = rig.schedule(now + HOUR)
    rig.forward()
    rig.reschedule(message_id, now + 26 * HOUR)
    rig.forward()
    [row] = [m for m in rig.bucketer.stored() if m.message_id == message_id]
    assert (row.generation, row.due_ms, row.send_at_ms) == (1, now + 26 * HOUR, now + 26 * HOUR)
    failed = StatusUpdate(Status.FAILED, 1, 5, now + 26 * HOUR, now)
    rig.bucketer.messages.update_status(
        rig.app_id, message_id, failed, LogEntry(now, "1:5:failed", Status.FAILED)
    )
    rig.ingest.clock.advance(27 * HOUR)
    r = rig.ingest.client.put(f"/messages/{message_id}/redrive", headers=rig.ingest.alice.data)
    assert r.status_code == 200, r.text
    rig.forward()
    [sent] = rig.direct(message_id)
    assert (sent.generation, sent.send_at_ms) == (2, rig.ingest.clock.now_ms())


def test_a_bucketer_that_reads_the_abort_before_the_next_generation_is_recorded(rig: Rig) -> None:
    """The ABORT read while the record shows ABORTED at generation 0 (ingest's first write),
    the REDRIVE once it shows generation 1: the steps of the route, one by one."""
    now = rig.ingest.clock.now_ms()
    old, new = now + HOUR, now + 2 * HOUR
    message_id = rig.schedule(old)
    rig.forward()
    store, b = rig.bucketer.messages, rig.bucketer
    aborted = StatusUpdate(Status.ABORTED, 0, 1, old, now)
    store.update_status(rig.app_id, message_id, aborted, LogEntry(now, "0:aborted", Status.ABORTED))
    b.process(b.command(CommandKind.ABORT, message_id, 0, send_at_ms=old, app_id=rig.app_id))
    assert rig.stored(message_id) == []
    assert rig.outcome("ABORT", "applied") == 1
    ready = StatusUpdate(Status.READY, 1, 1, new, now)
    store.update_status(rig.app_id, message_id, ready, LogEntry(now, "1:rescheduled", Status.READY))
    b.process(b.command(CommandKind.REDRIVE, message_id, 1, send_at_ms=new, app_id=rig.app_id))
    assert rig.stored(message_id) == [(1, new)]


def test_to_a_time_within_the_look_ahead_it_goes_to_the_ring_at_once(rig: Rig) -> None:
    now = rig.ingest.clock.now_ms()
    message_id = rig.schedule(now + HOUR)
    rig.forward()
    rig.reschedule(message_id, now + 2_000)
    rig.forward()
    assert rig.stored(message_id) == []
    [sent] = rig.direct(message_id)
    assert (sent.generation, sent.attempt, sent.due_ms) == (1, 1, now + 2_000)
    assert (rig.state(message_id).status, rig.state(message_id).generation) == (Status.QUEUED, 1)


def test_to_the_same_instant_the_row_is_the_new_generation(rig: Rig) -> None:
    """A row is known by (due, id) only: the ABORT of generation 0 must not remove the row of
    generation 1 at the same instant, in whatever order the commands come (a replay too)."""
    at = rig.ingest.clock.now_ms() + HOUR
    message_id = rig.schedule(at)
    rig.forward()
    rig.reschedule(message_id, at)
    abort, redrive = rig.pending_records()
    rig.bucketer.process(abort, redrive)
    assert rig.stored(message_id) == [(1, at)]
    assert rig.outcome("ABORT", "not_aborted") == 1
    rig.bucketer.process(abort, redrive)  # replayed after a restart
    assert rig.stored(message_id) == [(1, at)]


def test_two_reschedules_read_late_leave_only_the_last_generation(rig: Rig) -> None:
    now = rig.ingest.clock.now_ms()
    message_id = rig.schedule(now + HOUR)
    rig.forward()
    rig.reschedule(message_id, now + 2 * HOUR)
    rig.reschedule(message_id, now + 3 * HOUR)
    rig.forward()  # the four commands, read once the record is at generation 2
    assert rig.stored(message_id) == [(2, now + 3 * HOUR)]
    assert rig.outcome("REDRIVE", "stale") == 1  # generation 1: never placed
    assert rig.outcome("REDRIVE", "applied") == 1


# -- rolling upgrade: an old bucketer beside this ingest ---------------------------------------


def _previous(rig: Rig) -> None:
    current = rig.bucketer.processor._commands
    rig.bucketer.processor._commands = PreviousCommandHandler(  # type: ignore[assignment]
        current._codec,
        current._messages,
        current._buckets,
        current._apps,
        current._placer,
        current._router,
        current._scheduling,
        current._clock,
        current._metrics,
    )


@pytest.mark.parametrize("near", [False, True])
def test_an_old_bucketer_places_the_new_generation_at_the_new_time(rig: Rig, near: bool) -> None:
    """The reschedule sends no command kind an old bucketer refuses: it places the new
    generation like a redrive. Its one difference: the old generation's row stays stored (it
    ignores the ABORT's due instant), to be released at the old time and refused there by the
    dispatcher (an abort command and a later generation on the record: test_reschedule_fire.py
    in the releaser tests)."""
    _previous(rig)
    now = rig.ingest.clock.now_ms()
    old, new = now + HOUR, now + (2_000 if near else 2 * HOUR)
    message_id = rig.schedule(old)
    rig.forward()
    rig.reschedule(message_id, new)
    rig.forward()
    assert rig.bucketer.rejected() == []
    assert rig.outcome("ABORT", "not_aborted") == 1 and rig.outcome("REDRIVE", "applied") == 1
    if near:
        [sent] = rig.direct(message_id)
        assert (sent.generation, sent.due_ms) == (1, new)
        assert rig.stored(message_id) == [(0, old)]
    else:
        assert sorted(rig.stored(message_id)) == [(0, old), (1, new)]
    assert rig.state(message_id).generation == 1


def test_without_the_due_instant_the_old_row_stays_as_before(rig: Rig) -> None:
    """An ABORT without `send_at_ms` (ingest before reschedule) keeps the old behaviour."""
    now = rig.ingest.clock.now_ms()
    message_id = rig.schedule(now + HOUR)
    rig.forward()
    rig.bucketer.messages.update_status(
        rig.app_id,
        message_id,
        StatusUpdate(Status.READY, 1, 1, now + 2 * HOUR, now),
        LogEntry(now, "1:rescheduled", Status.READY),
    )
    rig.bucketer.process(rig.bucketer.command(CommandKind.ABORT, message_id, 0, app_id=rig.app_id))
    assert rig.stored(message_id) == [(0, now + HOUR)]
    assert rig.outcome("ABORT", "not_aborted") == 1
