"""Bulk abort and bulk redrive by filter: the single-message operation on each match, a bounded
slice per call, a cursor to go on, safe to repeat. Fakes and a ManualClock."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.clock import ManualClock
from scheduler.domain.status import Status
from scheduler.records import CommandKind
from scheduler.store.ports import LogEntry, MessagePage, StatusUpdate
from scheduler.testing.fakes import InMemoryMessageStore
from scheduler_ingest import bulk
from scheduler_ingest.publisher import PublishError

from .harness import SCHEDULING, T0, Harness, Tenant

pytestmark = pytest.mark.unit

GUARD = SCHEDULING.cancel_guard_ms
HOUR = 3_600_000


def _schedule(h: Harness, send_at: int, tenant: Tenant | None = None) -> str:
    r = h.schedule({"payload": "p", "sendAt": send_at}, tenant)
    assert r.status_code == 200, r.text
    h.clock.advance(1)  # distinct creation instants: the listing order is fixed
    return str(r.json()["messageId"])


def _set(h: Harness, message_id: str, status: Status, generation: int = 0) -> None:
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None
    now = h.clock.now_ms()
    h.messages.update_status(
        h.alice.app_id,
        message_id,
        StatusUpdate(status, generation, 1, view.state.due_ms, now),
        LogEntry(now, f"{generation}:1:{status.value.lower()}", status),
    )


def _status(h: Harness, message_id: str, tenant: Tenant | None = None) -> Status:
    view = h.messages.get((tenant or h.alice).app_id, message_id)
    assert view is not None
    return view.state.status


def _post(h: Harness, operation: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return h.client.post(f"/messages/{operation}", json=body, headers=headers or h.alice.data)


def _loop(h: Harness, operation: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Call until nextCursor is null, as a client does; the answers."""
    answers = []
    body = dict(body)
    for _ in range(100):
        r = _post(h, operation, body)
        assert r.status_code == 200, r.text
        answers.append(r.json())
        if r.json()["nextCursor"] is None:
            return answers
        body["cursor"] = r.json()["nextCursor"]
    raise AssertionError("the loop did not end")


def _counted(h: Harness, operation: str, outcome: str) -> float:
    value = h.registry.get_sample_value(
        "scheduler_ingest_message_operations_total",
        {"operation": operation, "outcome": outcome},
    )
    return value or 0.0


# -- abort ----------------------------------------------------------------------------------------


def test_abort_by_send_at_range_aborts_the_pending_matches_only(h: Harness) -> None:
    inside = [_schedule(h, T0 + 2 * HOUR + i) for i in range(3)]
    queued = _schedule(h, T0 + 2 * HOUR + 10)
    _set(h, queued, Status.QUEUED)
    sent = _schedule(h, T0 + 2 * HOUR + 20)
    _set(h, sent, Status.SENT)
    before, at_end = _schedule(h, T0 + HOUR), _schedule(h, T0 + 3 * HOUR)  # [from, to)
    soon = _schedule(h, T0 + 1_000)  # within the guard by the time of the call
    theirs = _schedule(h, T0 + 2 * HOUR, h.bob)
    h.clock.set(T0 + 1_000 - GUARD)

    r = _post(
        h,
        "abort",
        {"sendAtFrom": "2026-01-01T01:00:00.001Z", "sendAtTo": "2026-01-01T03:00:00Z"},
    )

    assert r.status_code == 200, r.text
    assert r.json() == {
        "matched": 4,
        "aborted": 4,
        "tooLate": 0,
        "notAbortable": 0,
        "failed": 0,
        "scanned": 8,  # alice's messages
        "nextCursor": None,
    }
    assert {m: _status(h, m) for m in [*inside, queued]} == dict.fromkeys(
        [*inside, queued], Status.ABORTED
    )
    assert _status(h, sent) is Status.SENT
    assert _status(h, before) is _status(h, at_end) is _status(h, soon) is Status.READY
    assert _status(h, theirs, h.bob) is Status.READY
    aborts = h.published_commands()
    assert sorted(c.message_id for c in aborts) == sorted([*inside, queued])
    assert {c.kind for c in aborts} == {CommandKind.ABORT}
    # before, at_end, soon, and `sent` (set SENT here, not counted off as the record writer does)
    assert h.usage.pending(h.alice.app_id) == 4
    assert _counted(h, "bulk_abort", "aborted") == 4
    # everything pending, without a body: the guard is applied to each
    r = h.client.post("/messages/abort", headers=h.alice.data)
    assert r.status_code == 200, r.text
    assert (r.json()["aborted"], r.json()["tooLate"]) == (2, 1)
    assert _status(h, soon) is Status.READY
    assert _counted(h, "bulk_abort", "too_late") == 1


def test_abort_one_status_only(h: Harness) -> None:
    ready, queued = _schedule(h, T0 + HOUR), _schedule(h, T0 + HOUR)
    _set(h, queued, Status.QUEUED)
    r = _post(h, "abort", {"status": "queued"})
    assert (r.json()["matched"], r.json()["aborted"]) == (1, 1)
    assert (_status(h, ready), _status(h, queued)) == (Status.READY, Status.ABORTED)


def test_a_limit_slices_the_work_and_the_cursor_goes_on_to_the_end(h: Harness) -> None:
    ids = [_schedule(h, T0 + HOUR + i) for i in range(7)]
    outside = _schedule(h, T0 + 5 * HOUR)
    answers = _loop(h, "abort", {"sendAtTo": T0 + 2 * HOUR, "limit": 3})
    assert [a["aborted"] for a in answers] == [3, 3, 1]
    assert all(_status(h, m) is Status.ABORTED for m in ids)
    assert _status(h, outside) is Status.READY
    # newest first, never one twice
    aborted = [c.message_id for c in h.published_commands()]
    assert aborted == list(reversed(ids))


def test_a_repeated_call_skips_what_is_done(h: Harness) -> None:
    for i in range(4):
        _schedule(h, T0 + HOUR + i)
    first = _post(h, "abort", {"limit": 2}).json()
    again = _post(h, "abort", {"limit": 2}).json()  # the first answer was lost: repeat it
    assert (first["aborted"], again["aborted"]) == (2, 2)
    assert len(h.published_commands()) == 4
    following = _post(h, "abort", {"limit": 2, "cursor": first["nextCursor"]}).json()
    assert (following["matched"], following["nextCursor"]) == (0, None)


def test_a_503_stops_the_call_and_its_cursor_repeats_the_page(h: Harness) -> None:
    ids = [_schedule(h, T0 + HOUR + i) for i in range(3)]
    h.fake.fail_with = PublishError("kafka_error", "down")
    first = _post(h, "abort", {})
    assert first.status_code == 200
    body = first.json()
    assert (body["matched"], body["aborted"], body["failed"]) == (3, 0, 3)
    assert body["nextCursor"] is not None
    # an abort answered 503 has its record ABORTED (the dispatcher honours it at fire time)
    assert all(_status(h, m) is Status.ABORTED for m in ids)
    h.fake.fail_with = None
    again = _post(h, "abort", {"cursor": body["nextCursor"]}).json()
    assert (again["matched"], again["nextCursor"]) == (0, None)
    assert _counted(h, "bulk_abort", "failed") == 3


# -- redrive --------------------------------------------------------------------------------------


def test_redrive_of_the_failed_messages_of_a_window(h: Harness) -> None:
    failed = [_schedule(h, T0 + 1_000 + i) for i in range(3)]
    late = _schedule(h, T0 + HOUR)
    ready = _schedule(h, T0 + 2_000)
    h.clock.set(T0 + 60_000)
    for m in [*failed, late]:
        _set(h, m, Status.FAILED)
    h.clock.advance(1_000)
    pending = h.usage.pending(h.alice.app_id)
    r = _post(h, "redrive", {"sendAtTo": "2026-01-01T00:00:10Z"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "matched": 3,
        "redriven": 3,
        "notRedrivable": 0,
        "failed": 0,
        "scanned": 5,
        "nextCursor": None,
    }
    assert all(_status(h, m) is Status.READY for m in failed)
    assert (_status(h, late), _status(h, ready)) == (Status.FAILED, Status.READY)
    commands = h.published_commands()
    assert {(c.kind, c.generation) for c in commands} == {(CommandKind.REDRIVE, 1)}
    assert h.usage.pending(h.alice.app_id) == pending + 3  # pending again
    assert _counted(h, "bulk_redrive", "redriven") == 3


def test_a_redrive_loop_does_not_redrive_again_what_failed_again(h: Harness) -> None:
    ids = [_schedule(h, T0 + 1_000 + i) for i in range(4)]
    h.clock.set(T0 + 60_000)
    for m in ids:
        _set(h, m, Status.FAILED)
    h.clock.advance(1_000)
    first = _post(h, "redrive", {"limit": 2}).json()
    assert first["redriven"] == 2
    # the two redriven fail again at once (the receiver still refuses) before the next call
    h.clock.advance(1_000)
    for m in ids[2:]:  # newest first: the last two were redriven
        _set(h, m, Status.FAILED, generation=1)
    # the answer was lost: the same call again, then on with the cursor
    again = _post(h, "redrive", {"limit": 2, "cursor": first["nextCursor"]}).json()
    assert again["redriven"] == 2
    repeat = _post(h, "redrive", {"limit": 2, "cursor": first["nextCursor"]}).json()
    assert (repeat["matched"], repeat["nextCursor"]) == (0, None)
    generations = [c.generation for c in h.published_commands() if c.kind is CommandKind.REDRIVE]
    assert generations == [1, 1, 1, 1]  # none redriven twice by one loop
    # a new loop (no cursor) takes what failed since
    assert _post(h, "redrive", {}).json()["redriven"] == 2


def test_a_redrive_refused_by_kafka_is_done_by_the_repeat(h: Harness) -> None:
    ids = [_schedule(h, T0 + 1_000 + i) for i in range(2)]
    h.clock.set(T0 + 60_000)
    for m in ids:
        _set(h, m, Status.FAILED)
    h.fake.fail_with = PublishError("kafka_error", "down")
    body = _post(h, "redrive", {}).json()
    assert (body["failed"], body["redriven"]) == (2, 0) and body["nextCursor"]
    assert all(_status(h, m) is Status.FAILED for m in ids)  # a redrive's 503 changes nothing
    h.fake.fail_with = None
    again = _post(h, "redrive", {"cursor": body["nextCursor"]}).json()
    assert (again["redriven"], again["nextCursor"]) == (2, None)


# -- bounds ---------------------------------------------------------------------------------------


def test_a_call_reads_a_bounded_number_of_messages(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing indexes sendAt: the app's listing is read, SCAN_MAX messages per call at most."""
    monkeypatch.setattr(bulk, "PAGE", 2)
    monkeypatch.setattr(bulk, "SCAN_MAX", 5)
    match = _schedule(h, T0 + 2 * HOUR)
    for i in range(9):
        _schedule(h, T0 + HOUR + i)
    answers = _loop(h, "abort", {"sendAtFrom": T0 + 2 * HOUR})
    assert [a["scanned"] for a in answers] == [5, 5]
    assert [a["aborted"] for a in answers] == [0, 1]  # the oldest comes last
    assert _status(h, match) is Status.ABORTED


class SlowListing(InMemoryMessageStore):
    """A listing page takes 4 s of the (manual) clock."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._slow_clock = clock

    def list(
        self, app_id: str, status: Status | None, cursor: str | None, limit: int
    ) -> MessagePage:
        self._slow_clock.advance(4_000)
        return super().list(app_id, status, cursor, limit)


def test_a_call_stops_reading_pages_after_its_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PAGE", 2)
    clock = ManualClock(T0)
    h = Harness(clock=clock, messages=SlowListing(clock))
    ids = [_schedule(h, T0 + HOUR + i) for i in range(8)]
    first = _post(h, "abort", {}).json()
    assert (first["scanned"], first["aborted"]) == (6, 6)  # pages at 0, 4 and 8 s of 10
    assert first["nextCursor"]
    last = _post(h, "abort", {"cursor": first["nextCursor"]}).json()
    assert (last["aborted"], last["nextCursor"]) == (2, None)
    assert all(_status(h, m) is Status.ABORTED for m in ids)
    h.close()


# -- the routes -----------------------------------------------------------------------------------


def test_the_dashboard_form_acts_on_the_app_of_the_path(h: Harness) -> None:
    mine, theirs = _schedule(h, T0 + HOUR), _schedule(h, T0 + HOUR, h.bob)
    r = h.client.post(
        f"/applications/{h.alice.app_id}/messages/abort", json={}, headers=h.alice.control
    )
    assert (r.status_code, r.json()["aborted"]) == (200, 1)
    assert (_status(h, mine), _status(h, theirs, h.bob)) == (Status.ABORTED, Status.READY)
    other = h.client.post(
        f"/applications/{h.bob.app_id}/messages/redrive", json={}, headers=h.alice.control
    )
    assert (other.status_code, other.json()["error"]) == (404, "app_not_found")
    assert h.client.post("/messages/abort", json={}, headers=h.alice.control).status_code == 403


@pytest.mark.parametrize(
    ("operation", "body", "error"),
    [
        ("abort", {"status": "FAILED"}, "invalid_parameter"),
        ("abort", {"status": "SENT"}, "invalid_parameter"),
        ("abort", {"status": 1}, "invalid_parameter"),
        ("redrive", {"status": "READY"}, "invalid_parameter"),
        ("abort", {"sendAtFrom": "2030-01-01T00:00:00"}, "invalid_parameter"),
        ("abort", {"sendAtTo": "tomorrow"}, "invalid_parameter"),
        ("abort", {"sendAtFrom": T0 + HOUR, "sendAtTo": T0 + HOUR}, "invalid_parameter"),
        ("abort", {"limit": 0}, "invalid_parameter"),
        ("abort", {"limit": 10_001}, "invalid_parameter"),
        ("abort", {"limit": "5"}, "invalid_parameter"),
        ("abort", {"limit": True}, "invalid_parameter"),
        ("abort", {"statuses": ["READY"]}, "unknown_field"),
        ("abort", ["READY"], "invalid_request"),
        ("abort", {"cursor": "bm90LWEtY3Vyc29y"}, "invalid_cursor"),
        ("abort", {"cursor": 7}, "invalid_cursor"),
    ],
)
def test_invalid_filters_are_400(h: Harness, operation: str, body: Any, error: str) -> None:
    message_id = _schedule(h, T0 + HOUR)
    r = _post(h, operation, body)
    assert (r.status_code, r.json()["error"]) == (400, error), r.text
    assert _status(h, message_id) is Status.READY and h.published_commands() == []


def test_a_cursor_serves_the_filter_that_made_it(h: Harness) -> None:
    for i in range(3):
        _schedule(h, T0 + HOUR + i)
    cursor = _post(h, "abort", {"limit": 1, "status": "READY"}).json()["nextCursor"]
    r = _post(h, "abort", {"limit": 1, "cursor": cursor})  # without the status now
    assert (r.status_code, r.json()["error"]) == (400, "invalid_cursor")
    r = _post(h, "redrive", {"cursor": cursor})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_cursor")
    assert _post(h, "abort", {"limit": 5, "status": "READY", "cursor": cursor}).status_code == 200


def test_the_openapi_document_has_the_routes(h: Harness) -> None:
    spec = h.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/messages/abort", "/applications/{appId}/messages/abort"):
        post = paths[path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["status"]["enum"] == ["QUEUED", "READY"]
        answer = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["$ref"].endswith("/BulkAbortResult")
    redrive = paths["/messages/redrive"]["post"]
    assert redrive["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BulkRedriveResult"
    )
    assert set(spec["components"]["schemas"]["BulkAbortResult"]["properties"]) == {
        "matched",
        "aborted",
        "tooLate",
        "notAbortable",
        "failed",
        "scanned",
        "nextCursor",
    }
