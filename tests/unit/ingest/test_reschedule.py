"""Reschedule: same id, new sendAt. Guarded like an abort (the generation it is at ends ABORTED
with the abort's checks and certainty), then the next generation due at the new sendAt, through
a REDRIVE command that every bucketer applies. Fakes and a ManualClock."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.clock import ManualClock
from scheduler.domain.status import Status
from scheduler.records import CommandKind, DeliveryOutcome
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler_ingest.publisher import FakePublisher, PublishError

from .harness import COMMANDS, SCHEDULING, T0, Harness
from .test_abort_outcome import FakeResults, SlowAbortStore, _result

pytestmark = pytest.mark.unit

GUARD = SCHEDULING.cancel_guard_ms  # 200
DAY_MS = 86_400_000


class KindFailingPublisher(FakePublisher):
    """Kafka refuses the commands of one kind (the others go through)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: CommandKind | None = None

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        refused = self.refuse is not None and topic.endswith("commands")
        if refused and COMMANDS.decode(value).kind is self.refuse:
            raise PublishError("kafka_error", "down")
        await super().publish(topic, key, value)


def _schedule(h: Harness, send_at: Any) -> str:
    r = h.schedule({"payload": "p", "sendAt": send_at})
    assert r.status_code == 200, r.text
    return str(r.json()["messageId"])


def _reschedule(
    h: Harness, message_id: str, body: Any, headers: dict[str, str] | None = None
) -> Any:
    return h.client.put(
        f"/messages/{message_id}/reschedule", json=body, headers=headers or h.alice.data
    )


def _set(h: Harness, message_id: str, status: Status, attempt: int = 1, by: str = "x") -> None:
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None
    state = view.state
    h.messages.update_status(
        h.alice.app_id,
        message_id,
        StatusUpdate(status, state.generation, attempt, state.due_ms, h.clock.now_ms()),
        LogEntry(h.clock.now_ms(), f"{state.generation}:{attempt}:{by}", status),
    )


def _state(h: Harness, message_id: str) -> StatusUpdate:
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None
    return view.state


def _counted(h: Harness, outcome: str) -> float:
    value = h.registry.get_sample_value(
        "scheduler_ingest_message_operations_total",
        {"operation": "reschedule", "outcome": outcome},
    )
    return value or 0.0


def test_reschedule_ready_message(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    h.clock.advance(5)
    r = _reschedule(h, message_id, {"sendAt": "2026-01-01T03:00:00+02:00"})  # T0 + 1 h
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["messageId"], body["status"], body["generation"], body["attempt"]) == (
        message_id,
        "READY",
        1,
        1,
    )
    assert body["dueAt"] == "2026-01-01T01:00:00.000Z"
    assert body["sendAt"] == "2026-01-01T00:01:00.000Z"  # the time first asked for, kept
    # read-your-writes
    shown = h.client.get(f"/messages/{message_id}", headers=h.alice.data).json()
    assert (shown["status"], shown["generation"], shown["dueAt"]) == (
        "READY",
        1,
        "2026-01-01T01:00:00.000Z",
    )
    # The generation it was at is aborted first (with its due instant, for the bucketer), then
    # the next one is created due at the new time: both keyed by the message id.
    abort, redrive = h.published_commands()
    assert (abort.kind, abort.generation, abort.send_at_ms, abort.issued_ms) == (
        CommandKind.ABORT,
        0,
        T0 + 60_000,
        T0 + 5,
    )
    assert (redrive.kind, redrive.generation, redrive.send_at_ms) == (
        CommandKind.REDRIVE,
        1,
        T0 + 3_600_000,
    )
    assert all(p.key == message_id.encode() for p in h.published()[-2:])
    logs = h.client.get(f"/messages/{message_id}/logs", headers=h.alice.data).json()["logs"]
    assert [(e["status"], e["data"]) for e in logs[1:]] == [
        ("ABORTED", {"by": "api", "reason": "rescheduled"}),
        (
            "READY",
            {
                "rescheduled": {
                    "from": "2026-01-01T00:01:00.000Z",
                    "to": "2026-01-01T01:00:00.000Z",
                },
                "generation": 1,
            },
        ),
    ]
    # aborted (-1), then pending again (+1)
    assert h.usage.pending(h.alice.app_id) == 1
    assert _counted(h, "rescheduled") == 1


@pytest.mark.parametrize(
    ("send_at", "due"),
    [
        (T0 + 7_200_000, T0 + 7_200_000),  # epoch milliseconds, a JSON number
        ("2026-01-01T02:00:00.0001Z", T0 + 7_200_001),  # finer than a ms: rounded up
        ("2026-01-01T07:30:00+05:30", T0 + 7_200_000),
        (T0 - 60_000, T0 - 60_000),  # in the past within the window: deliver now
    ],
)
def test_send_at_is_read_as_when_scheduling(h: Harness, send_at: Any, due: int) -> None:
    message_id = _schedule(h, T0 + 60_000)
    r = _reschedule(h, message_id, {"sendAt": send_at})
    assert r.status_code == 200, r.text
    assert _state(h, message_id).due_ms == due
    assert h.published_commands()[-1].send_at_ms == due


def test_twice_ends_each_generation_in_turn(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    assert _reschedule(h, message_id, {"sendAt": T0 + 120_000}).status_code == 200
    r = _reschedule(h, message_id, {"sendAt": T0 + 30_000})  # earlier than first asked: fine
    assert r.status_code == 200 and r.json()["generation"] == 2
    kinds = [(c.kind, c.generation, c.send_at_ms) for c in h.published_commands()]
    assert kinds == [
        (CommandKind.ABORT, 0, T0 + 60_000),
        (CommandKind.REDRIVE, 1, T0 + 120_000),
        (CommandKind.ABORT, 1, T0 + 120_000),
        (CommandKind.REDRIVE, 2, T0 + 30_000),
    ]
    assert h.usage.pending(h.alice.app_id) == 1


def test_a_queued_message_retrying_is_moved_through_the_dashboard_route(h: Harness) -> None:
    """The receiver was down: the message is QUEUED, its attempt 3 due at its retry time."""
    message_id = _schedule(h, T0 + 1_000)
    h.clock.advance(2_000)
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None
    retry = StatusUpdate(Status.QUEUED, 0, 3, T0 + 10_000, h.clock.now_ms(), http_status=503)
    h.messages.update_status(
        h.alice.app_id, message_id, retry, LogEntry(h.clock.now_ms(), "0:2:attempt", Status.QUEUED)
    )
    r = h.client.put(
        f"/applications/{h.alice.app_id}/messages/{message_id}/reschedule",
        json={"sendAt": T0 + DAY_MS},
        headers=h.alice.control,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["generation"], r.json()["attempt"], r.json()["lastHttpStatus"]) == (1, 1, None)
    abort = h.published_commands()[0]
    assert (abort.generation, abort.send_at_ms) == (0, T0 + 10_000)  # the retry's due instant


def test_within_the_guard_of_the_current_due_instant_is_too_late(h: Harness) -> None:
    message_id = _schedule(h, T0 + 1_000)
    h.clock.advance(1_000 - GUARD)
    r = _reschedule(h, message_id, {"sendAt": T0 + 60_000})
    assert (r.status_code, r.json()["error"]) == (409, "too_late")
    assert _state(h, message_id).status is Status.READY
    assert h.published_commands() == []
    assert h.usage.pending(h.alice.app_id) == 1
    assert _counted(h, "too_late") == 1


def test_just_before_the_guard_it_is_moved(h: Harness) -> None:
    message_id = _schedule(h, T0 + 1_000)
    h.clock.advance(1_000 - GUARD - 1)
    assert _reschedule(h, message_id, {"sendAt": T0 + 60_000}).status_code == 200


@pytest.mark.parametrize("status", [Status.SENT, Status.FAILED, Status.ABORTED])
def test_a_finished_message_is_not_reschedulable(h: Harness, status: Status) -> None:
    message_id = _schedule(h, T0 + 60_000)
    _set(h, message_id, status)
    r = _reschedule(h, message_id, {"sendAt": T0 + 120_000})
    assert (r.status_code, r.json()["error"]) == (409, "not_reschedulable")
    assert h.published_commands() == []


def test_an_aborted_message_stays_aborted(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    assert h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data).status_code == 200
    r = _reschedule(h, message_id, {"sendAt": T0 + 120_000})
    assert (r.status_code, r.json()["error"]) == (409, "not_reschedulable")
    assert [c.kind for c in h.published_commands()] == [CommandKind.ABORT]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "missing_sendAt"),
        ({"sendAt": None}, "missing_sendAt"),
        ({"sendAt": "2030-01-01T12:00:00"}, "invalid_sendAt"),  # no offset
        ({"sendAt": "1893499200000"}, "invalid_sendAt"),  # digits in a string
        ({"sendAt": 1_893_499_200}, "invalid_sendAt"),  # seconds
        ({"sendAt": T0 - DAY_MS - 1}, "invalid_sendAt"),  # older than the past window
        ({"sendAt": T0 + 100 * 366 * DAY_MS + 1}, "invalid_sendAt"),  # beyond the horizon
        ({"sendAt": T0 + 60_000, "payload": 1}, "unknown_field"),
        ([T0 + 60_000], "invalid_request"),
    ],
)
def test_invalid_bodies_are_400_and_change_nothing(h: Harness, body: Any, error: str) -> None:
    message_id = _schedule(h, T0 + 60_000)
    r = _reschedule(h, message_id, body)
    assert (r.status_code, r.json()["error"]) == (400, error), r.text
    assert r.json()["message"]
    assert _state(h, message_id) == StatusUpdate(Status.READY, 0, 1, T0 + 60_000, T0)
    assert h.published_commands() == []


def test_an_empty_body_is_400(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    r = h.client.put(f"/messages/{message_id}/reschedule", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_json")


def test_unknown_message_and_other_tenants_are_404(h: Harness) -> None:
    theirs = _schedule(h, T0 + 60_000)  # alice's
    body = {"sendAt": T0 + 120_000}
    unknown = _reschedule(h, "01KDVDNA00DTCNR08CFRM7S7M7", body)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "message_not_found")
    assert _reschedule(h, "not-an-id", body).status_code == 404
    other = _reschedule(h, theirs, body, headers=h.bob.data)
    assert (other.status_code, other.json()["error"]) == (404, "message_not_found")
    wrong_owner = h.client.put(
        f"/applications/{h.alice.app_id}/messages/{theirs}/reschedule",
        json=body,
        headers=h.bob.control,
    )
    assert (wrong_owner.status_code, wrong_owner.json()["error"]) == (404, "app_not_found")
    kind = h.client.put(
        f"/applications/{h.alice.app_id}/messages/{theirs}/reschedule",
        json=body,
        headers=h.alice.data,
    )
    assert kind.status_code == 403
    assert h.published_commands() == [] and _state(h, theirs).status is Status.READY


# -- the abort's certainty ------------------------------------------------------------------------


def _slow(outcome: DeliveryOutcome | None, error: str | None = None) -> tuple[Harness, str]:
    """The ABORTED write outlasts the guard (a slow replica): the dispatcher's result decides."""
    clock = ManualClock(T0)
    results = FakeResults(clock)
    h = Harness(clock=clock, messages=SlowAbortStore(clock, 400), results=results)
    due = T0 + 10_000
    message_id = _schedule(h, due)
    if outcome is not None:
        results.result = _result(message_id, outcome, error)
    clock.set(due - GUARD - 50)  # the early check lets it through
    return h, message_id


def test_a_slow_reschedule_the_dispatcher_skipped_is_moved() -> None:
    h, message_id = _slow(DeliveryOutcome.SKIPPED, "aborted")
    r = _reschedule(h, message_id, {"sendAt": T0 + 60_000})
    assert r.status_code == 200, r.text
    assert [c.kind for c in h.published_commands()] == [CommandKind.ABORT, CommandKind.REDRIVE]
    h.close()


@pytest.mark.parametrize(
    "outcome", [DeliveryOutcome.SENT, DeliveryOutcome.RETRY, DeliveryOutcome.FAILED, None]
)
def test_a_slow_reschedule_the_dispatcher_beat_is_too_late_and_not_moved(
    outcome: DeliveryOutcome | None,
) -> None:
    """Delivered (or attempted, or not confirmed) at the old time: no new generation, so the
    message is never delivered a second time at the new one."""
    h, message_id = _slow(outcome)
    r = _reschedule(h, message_id, {"sendAt": T0 + 60_000})
    assert (r.status_code, r.json()["error"]) == (409, "too_late")
    assert [c.kind for c in h.published_commands()] == [CommandKind.ABORT]
    assert _state(h, message_id).generation == 0
    h.close()


# -- interrupted ----------------------------------------------------------------------------------


def test_a_503_on_the_abort_leaves_it_aborted_and_a_repeat_completes_it() -> None:
    publisher = KindFailingPublisher()
    h = Harness(publisher=publisher)
    message_id = _schedule(h, T0 + 60_000)
    publisher.refuse = CommandKind.ABORT
    r = _reschedule(h, message_id, {"sendAt": T0 + 120_000})
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    assert "repeat the reschedule" in r.json()["message"] and r.headers["Retry-After"]
    # not delivered at the old time (the dispatcher re-checks the record), not moved yet
    assert (_state(h, message_id).status, _state(h, message_id).generation) == (Status.ABORTED, 0)
    assert h.usage.pending(h.alice.app_id) == 0
    publisher.refuse = None
    h.clock.advance(1_000)
    r = _reschedule(h, message_id, {"sendAt": T0 + 180_000})
    assert r.status_code == 200, r.text
    assert (r.json()["generation"], r.json()["dueAt"]) == (1, "2026-01-01T00:03:00.000Z")
    abort, redrive = h.published_commands()
    assert (abort.kind, abort.generation, abort.send_at_ms) == (CommandKind.ABORT, 0, T0 + 60_000)
    assert (redrive.kind, redrive.generation) == (CommandKind.REDRIVE, 1)
    assert h.usage.pending(h.alice.app_id) == 1
    assert _counted(h, "unavailable") == 1 and _counted(h, "rescheduled") == 1
    h.close()


def test_a_503_on_the_new_generation_is_repeated_likewise() -> None:
    publisher = KindFailingPublisher()
    h = Harness(publisher=publisher)
    message_id = _schedule(h, T0 + 60_000)
    publisher.refuse = CommandKind.REDRIVE
    r = _reschedule(h, message_id, {"sendAt": T0 + 120_000})
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    assert _state(h, message_id).status is Status.ABORTED
    assert [c.kind for c in h.published_commands()] == [CommandKind.ABORT]
    publisher.refuse = None
    r = _reschedule(h, message_id, {"sendAt": T0 + 120_000})
    assert r.status_code == 200 and r.json()["generation"] == 1
    kinds = [(c.kind, c.generation) for c in h.published_commands()]
    assert kinds == [
        (CommandKind.ABORT, 0),
        (CommandKind.ABORT, 0),  # again: harmless, and the certainty is shown again
        (CommandKind.REDRIVE, 1),
    ]
    assert h.usage.pending(h.alice.app_id) == 1
    h.close()


def test_a_resumed_reschedule_checks_the_old_time_again() -> None:
    """Repeated after the old due instant: like an abort that late, it is answered from the
    dispatcher's result of the old attempt; delivered: too late, never a second delivery."""
    clock = ManualClock(T0)
    results = FakeResults(clock)
    publisher = KindFailingPublisher()
    h = Harness(clock=clock, results=results, publisher=publisher)
    message_id = _schedule(h, T0 + 10_000)
    publisher.refuse = CommandKind.ABORT
    assert _reschedule(h, message_id, {"sendAt": T0 + 60_000}).status_code == 503
    publisher.refuse = None
    clock.set(T0 + 20_000)
    results.result = _result(message_id, DeliveryOutcome.SENT)
    r = _reschedule(h, message_id, {"sendAt": T0 + 60_000})
    assert (r.status_code, r.json()["error"]) == (409, "too_late")
    assert [c.kind for c in h.published_commands()] == [CommandKind.ABORT]
    assert h.usage.pending(h.alice.app_id) == 0  # counted once, by the first call
    h.close()


def test_the_openapi_document_has_the_routes(h: Harness) -> None:
    paths = h.client.get("/openapi.json").json()["paths"]
    put = paths["/messages/{messageId}/reschedule"]["put"]
    schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["sendAt"] and put["security"] == [{"DataKey": []}]
    assert put["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/MessageOut"
    )
    dash = paths["/applications/{appId}/messages/{messageId}/reschedule"]["put"]
    assert dash["security"] == [{"ControlKey": []}]
