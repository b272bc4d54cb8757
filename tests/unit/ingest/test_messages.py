"""List, abort and redrive with fakes and a ManualClock."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from scheduler.records import CommandKind
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler_ingest.publisher import PublishError

from .harness import T0, Harness

pytestmark = pytest.mark.unit


def _schedule(h: Harness, send_at_ms: int) -> str:
    r = h.schedule({"payload": "p", "sendAt": send_at_ms})
    assert r.status_code == 200, r.text
    return str(r.json()["messageId"])


def _set(
    h: Harness, message_id: str, status: Status, generation: int = 0, attempt: int = 1
) -> None:
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None
    h.messages.update_status(
        h.alice.app_id,
        message_id,
        StatusUpdate(
            status, generation, attempt, view.state.due_ms, h.clock.now_ms(), http_status=500
        ),
        LogEntry(h.clock.now_ms(), f"{generation}:{attempt}:{status.value}", status),
    )


def test_list_is_newest_first_filtered_and_paged(h: Harness) -> None:
    ids = []
    for _ in range(5):
        ids.append(_schedule(h, T0 + 60_000))
        h.clock.advance(10)
    _set(h, ids[1], Status.SENT)
    _set(h, ids[3], Status.SENT)
    r = h.client.get("/messages?limit=2", headers=h.alice.data)
    page = r.json()
    assert [m["messageId"] for m in page["messages"]] == [ids[4], ids[3]]
    rest = h.client.get(f"/messages?startFrom={page['next']}", headers=h.alice.data).json()
    assert [m["messageId"] for m in rest["messages"]] == [ids[2], ids[1], ids[0]]
    assert rest["next"] is None
    sent = h.client.get("/messages?status=SENT", headers=h.alice.data).json()
    assert [m["messageId"] for m in sent["messages"]] == [ids[3], ids[1]]
    dash = h.client.get(
        f"/applications/{h.alice.app_id}/messages?status=sent", headers=h.alice.control
    )
    assert [m["messageId"] for m in dash.json()["messages"]] == [ids[3], ids[1]]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("status=DONE", "invalid_parameter"),
        ("limit=0", "invalid_parameter"),
        ("limit=100000", "invalid_parameter"),
        ("limit=abc", "invalid_parameter"),
        ("startFrom=%%%", "invalid_cursor"),
        ("startFrom=bm90LWEtY3Vyc29y", "invalid_cursor"),
    ],
)
def test_bad_list_parameters(h: Harness, query: str, error: str) -> None:
    r = h.client.get(f"/messages?{query}", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (400, error), r.text


def test_abort_ready_message(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    h.clock.advance(5)
    r = h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data)
    assert r.status_code == 200 and r.json()["status"] == "ABORTED"
    # read-your-writes
    assert (
        h.client.get(f"/messages/{message_id}", headers=h.alice.data).json()["status"] == "ABORTED"
    )
    [command] = h.published_commands()
    assert (command.kind, command.message_id, command.app_id, command.generation) == (
        CommandKind.ABORT,
        message_id,
        h.alice.app_id,
        0,
    )
    assert command.issued_ms == T0 + 5
    assert h.published()[-1].key == message_id.encode()
    assert h.published()[-1].topic == h.topics.commands
    logs = h.client.get(f"/messages/{message_id}/logs", headers=h.alice.data).json()["logs"]
    assert [e["status"] for e in logs] == ["READY", "ABORTED"]
    again = h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data)
    assert (again.status_code, again.json()["error"]) == (409, "not_abortable")


def test_abort_queued_message_via_dashboard(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    _set(h, message_id, Status.QUEUED)
    r = h.client.put(
        f"/applications/{h.alice.app_id}/messages/{message_id}/abort", headers=h.alice.control
    )
    assert r.status_code == 200 and r.json()["status"] == "ABORTED"


@pytest.mark.parametrize("status", [Status.SENT, Status.FAILED, Status.ABORTED])
def test_abort_of_a_finished_message_is_409(h: Harness, status: Status) -> None:
    message_id = _schedule(h, T0 + 60_000)
    _set(h, message_id, status)
    r = h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (409, "not_abortable")
    assert h.published_commands() == []


def test_abort_within_the_guard_is_too_late(h: Harness) -> None:
    message_id = _schedule(h, T0 + 1_000)
    h.clock.advance(1_000 - 200)  # exactly at the guard (200 ms before due)
    r = h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (409, "too_late")
    assert h.messages.get(h.alice.app_id, message_id).state.status is Status.READY  # type: ignore[union-attr]
    assert h.published_commands() == []


def test_abort_just_before_the_guard_wins(h: Harness) -> None:
    message_id = _schedule(h, T0 + 1_000)
    h.clock.advance(1_000 - 201)
    assert h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data).status_code == 200


def test_abort_when_the_command_cannot_be_published_is_503_but_recorded(h: Harness) -> None:
    message_id = _schedule(h, T0 + 60_000)
    h.fake.fail_with = PublishError("kafka_error", "down")
    r = h.client.put(f"/messages/{message_id}/abort", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    # the dispatcher re-checks the record at fire time, so the abort still holds
    assert h.messages.get(h.alice.app_id, message_id).state.status is Status.ABORTED  # type: ignore[union-attr]


def test_redrive_failed_message(h: Harness) -> None:
    message_id = _schedule(h, T0 + 1_000)
    h.clock.advance(10_000)
    _set(h, message_id, Status.FAILED, attempt=5)
    r = h.client.put(f"/messages/{message_id}/redrive", headers=h.alice.data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["generation"], body["attempt"]) == ("READY", 1, 1)
    assert (body["lastHttpStatus"], body["dueAt"]) == (None, "2026-01-01T00:00:10.000Z")
    [command] = h.published_commands()
    assert (command.kind, command.generation, command.send_at_ms) == (
        CommandKind.REDRIVE,
        1,
        T0 + 10_000,
    )
    again = h.client.put(f"/messages/{message_id}/redrive", headers=h.alice.data)
    assert (again.status_code, again.json()["error"]) == (409, "not_redrivable")


@pytest.mark.parametrize("status", [Status.READY, Status.QUEUED, Status.SENT, Status.ABORTED])
def test_redrive_of_anything_but_failed_is_409(h: Harness, status: Status) -> None:
    message_id = _schedule(h, T0 + 60_000)
    if status is not Status.READY:
        _set(h, message_id, status)
    r = h.client.put(f"/messages/{message_id}/redrive", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (409, "not_redrivable")
    assert h.published_commands() == []


def test_redrive_when_kafka_fails_changes_nothing(h: Harness) -> None:
    message_id = _schedule(h, T0 + 1_000)
    _set(h, message_id, Status.FAILED)
    h.fake.fail_with = PublishError("kafka_error", "down")
    r = h.client.put(f"/messages/{message_id}/redrive", headers=h.alice.data)
    assert r.status_code == 503
    assert h.messages.get(h.alice.app_id, message_id).state.status is Status.FAILED  # type: ignore[union-attr]


def test_a_past_send_at_reports_its_lateness_and_a_small_dispatch_delay(h: Harness) -> None:
    """The user report: sendAt 300.758 s before it was accepted, delivered 0.4 s after: the
    client keeps latenessMs = delivered - sendAt; dispatchDelayMs counts from the acceptance
    (docs/ARCHITECTURE.md, "Lateness")."""
    send_at = T0 - 300_758
    r = h.schedule({"payload": 1, "sendAt": send_at})
    message_id = r.raise_for_status().json()["messageId"]
    shown = h.client.get(f"/messages/{message_id}", headers=h.alice.data).json()
    assert (shown["latenessMs"], shown["dispatchDelayMs"]) == (None, None)  # not SENT yet
    # what the record writer stores for the SENT result: lateness = delivered - due (= sendAt)
    sent = StatusUpdate(Status.SENT, 0, 1, send_at, T0 + 400, lateness_ms=301_158)
    h.messages.update_status(
        h.alice.app_id, message_id, sent, LogEntry(T0 + 400, "0:1:sent", Status.SENT, {})
    )
    shown = h.client.get(f"/messages/{message_id}", headers=h.alice.data).json()
    assert (shown["latenessMs"], shown["dispatchDelayMs"]) == (301_158, 400)
    # a future sendAt (or a retry's, or a redrive's due instant): the two are the same
    later = h.schedule({"payload": 2, "sendAt": T0 + 60_000}).json()["messageId"]
    sent = StatusUpdate(Status.SENT, 0, 1, T0 + 60_000, T0 + 60_012, lateness_ms=12)
    h.messages.update_status(
        h.alice.app_id, later, sent, LogEntry(T0 + 60_012, "0:1:sent", Status.SENT, {})
    )
    shown = h.client.get(f"/messages/{later}", headers=h.alice.data).json()
    assert (shown["latenessMs"], shown["dispatchDelayMs"]) == (12, 12)


def test_a_flexible_window_delivers_within_it_at_the_instant_the_id_picks(h: Harness) -> None:
    window = 900_000
    asked = T0 + 3_600_000
    body = {"payload": "p", "sendAt": asked, "flexibleWindowMs": window, "idempotencyKey": "k1"}
    first = h.schedule(body)
    assert first.status_code == 200, first.text
    again = h.schedule(body)  # an idempotent retry: the same instant, so the same message
    assert again.json()["duplicate"] is True
    assert again.json()["sendAt"] == first.json()["sendAt"]
    [request] = h.published_requests()
    assert asked <= request.send_at_ms <= asked + window
    view = h.messages.get(h.alice.app_id, request.message_id)
    assert view is not None and view.state.due_ms == request.send_at_ms  # guarded from it
    chosen = set()
    for i in range(30):
        r = h.schedule({"payload": i, "sendAt": asked, "flexibleWindowMs": window})
        chosen.add(r.json()["sendAt"])
    assert len(chosen) > 25  # spread over the window


@pytest.mark.parametrize("window", [-1, 86_400_001, "60000", 1.5, False])
def test_a_bad_flexible_window_is_refused(h: Harness, window: object) -> None:
    r = h.schedule({"payload": "p", "sendAt": T0 + 60_000, "flexibleWindowMs": window})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_flexibleWindowMs"), r.text
    assert h.published_requests() == []
