"""Recurring schedule routes with fakes and a ManualClock (docs/SCHEDULES.md, docs/API.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from scheduler.domain.ids import occurrence_message_id
from scheduler.domain.status import FIRST_ATTEMPT, Status
from scheduler.records import CommandKind
from scheduler.schedule_occurrences import occurrence_request
from scheduler.store.cursor import encode_cursor
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate
from scheduler.testing.fakes import InMemoryScheduleStore
from scheduler_ingest.publisher import PublishError

from .harness import SCHEDULING, T0, Harness, Tenant

pytestmark = pytest.mark.unit

GUARD = SCHEDULING.cancel_guard_ms
MINUTE = 60_000
BODY: dict[str, Any] = {
    "expression": "0 9 * * MON-FRI",
    "timezone": "Europe/Berlin",
    "payload": {"report": "daily"},
    "kafkaKey": "k-1",
}
EVERY_MINUTE: dict[str, Any] = {"expression": "rate(1 minute)", "start": T0, "payload": "tick"}


def _create(h: Harness, body: dict[str, Any] | None = None, tenant: Tenant | None = None) -> str:
    r = h.client.post("/schedules", json=body or BODY, headers=(tenant or h.alice).data)
    assert r.status_code == 200, r.text
    return str(r.json()["scheduleId"])


def _url(schedule_id: str, action: str = "") -> str:
    return f"/schedules/{schedule_id}{action}"


def test_create_then_get(h: Harness) -> None:
    r = h.client.post("/schedules", json=BODY, headers=h.alice.data)
    assert r.status_code == 200, r.text
    created = r.json()
    schedule_id = created["scheduleId"]
    assert created == {
        "scheduleId": schedule_id,
        "appId": h.alice.app_id,
        "expression": "0 9 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "start": "2026-01-01T00:00:00.000Z",  # the creation instant
        "end": None,
        "maxOccurrences": None,
        "catchUp": "latest",
        "catchUpLimit": None,
        "payload": {"report": "daily"},
        "kafkaKey": "k-1",
        "flexibleWindowMs": 0,
        "paused": False,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
        "createdUntil": "2026-01-01T00:00:00.000Z",
        "nextOccurrence": "2026-01-01T08:00:00.000Z",  # 09:00 in Berlin, a Thursday
    }
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    assert stored is not None and stored.cursor_ms == T0  # nothing before it counts as missed
    h.clock.advance(5)
    assert h.client.get(_url(schedule_id), headers=h.alice.data).json() == created
    dash = h.client.get(
        f"/applications/{h.alice.app_id}/schedules/{schedule_id}", headers=h.alice.control
    )
    assert dash.json() == created


def test_create_with_every_field_and_rfc3339_instants(h: Harness) -> None:
    body = {
        **EVERY_MINUTE,
        "start": "2026-01-01T01:00:00+01:00",
        "end": 1_767_229_200_000,  # 01:00Z
        "maxOccurrences": 10,
        "catchUp": "all",
        "catchUpLimit": 5,
        "paused": True,
    }
    got = h.client.post("/schedules", json=body, headers=h.alice.data).json()
    assert (got["start"], got["end"], got["maxOccurrences"]) == (
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T01:00:00.000Z",
        10,
    )
    assert (got["catchUp"], got["catchUpLimit"], got["paused"]) == ("all", 5, True)
    assert got["kafkaKey"] is None and got["nextOccurrence"] is None  # paused


def test_a_flexible_window_is_kept_and_each_occurrence_is_due_within_it(h: Harness) -> None:
    window = 15 * MINUTE
    schedule_id = _create(h, {**EVERY_MINUTE, "flexibleWindowMs": window})
    got = h.client.get(_url(schedule_id), headers=h.alice.data).json()
    assert got["flexibleWindowMs"] == window
    schedule = h.schedules.get(h.alice.app_id, schedule_id)
    assert schedule is not None
    offsets = set()
    for k in range(1, 40):
        instant = T0 + k * MINUTE
        request = occurrence_request(schedule, instant, T0)
        assert instant <= request.send_at_ms <= instant + window
        assert occurrence_request(schedule, instant, T0 + 5) == dataclasses.replace(
            request, created_ms=T0 + 5
        )  # the same instant each time it is created
        offsets.add(request.send_at_ms - instant)
    assert len(offsets) > 30  # spread over the window, not one offset for all
    r = h.client.put(_url(schedule_id), json=EVERY_MINUTE, headers=h.alice.data)
    assert r.json()["flexibleWindowMs"] == 0  # an update without it removes it


@pytest.mark.parametrize("window", [-1, 86_400_001, 1.5, "900000", True])
def test_a_bad_flexible_window_is_refused(h: Harness, window: object) -> None:
    r = h.client.post(
        "/schedules", json={**EVERY_MINUTE, "flexibleWindowMs": window}, headers=h.alice.data
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_flexibleWindowMs"), r.text


def test_a_dashboard_create_is_the_apps(h: Harness) -> None:
    r = h.client.post(
        f"/applications/{h.alice.app_id}/schedules", json=BODY, headers=h.alice.control
    )
    assert r.status_code == 200, r.text
    shown = h.client.get(_url(r.json()["scheduleId"]), headers=h.alice.data)
    assert shown.json()["appId"] == h.alice.app_id


def test_list_pages_by_id_and_skips_deleted(h: Harness) -> None:
    ids = []
    for _ in range(4):
        ids.append(_create(h))
        h.clock.advance(1)  # ids are ULIDs of the creation instant: they sort by it
    _create(h, tenant=h.bob)
    assert h.client.delete(_url(ids[1]), headers=h.alice.data).status_code == 200
    page = h.client.get("/schedules?limit=2", headers=h.alice.data).json()
    assert [s["scheduleId"] for s in page["schedules"]] == [ids[0], ids[2]]
    rest = h.client.get(f"/schedules?startFrom={page['next']}", headers=h.alice.data).json()
    assert [s["scheduleId"] for s in rest["schedules"]] == [ids[3]]
    assert rest["next"] is None
    dash = h.client.get(f"/applications/{h.alice.app_id}/schedules", headers=h.alice.control)
    assert [s["scheduleId"] for s in dash.json()["schedules"]] == [ids[0], ids[2], ids[3]]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("startFrom=%%%", "invalid_cursor"),
        ("startFrom=bm90LWEtY3Vyc29y", "invalid_cursor"),
        (f"startFrom={encode_cursor(T0, 'x')}", "invalid_cursor"),  # a message list's cursor
        ("limit=0", "invalid_parameter"),
        ("limit=501", "invalid_parameter"),
    ],
)
def test_bad_list_parameters(h: Harness, query: str, error: str) -> None:
    r = h.client.get(f"/schedules?{query}", headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (400, error), r.text


def test_update_replaces_the_definition_and_keeps_paused_created_and_cursor(h: Harness) -> None:
    schedule_id = _create(h, {**BODY, "start": T0 + 1_000})
    h.clock.advance(1_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    h.schedules.advance_cursor(h.alice.app_id, schedule_id, T0 + 7 * MINUTE)  # the runner
    h.clock.advance(1_000)
    r = h.client.put(
        _url(schedule_id),
        json={"expression": "rate(5 minutes)", "payload": [1, 2], "catchUp": "skip"},
        headers=h.alice.data,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["expression"], got["payload"], got["catchUp"]) == (
        "rate(5 minutes)",
        [1, 2],
        "skip",
    )
    assert got["start"] == "2026-01-01T00:00:01.000Z"  # omitted: kept
    assert (got["timezone"], got["kafkaKey"]) == ("UTC", None)  # omitted: defaults, cleared
    assert got["paused"] is True and got["createdAt"] == "2026-01-01T00:00:00.000Z"
    assert got["updatedAt"] == "2026-01-01T00:00:02.000Z"
    assert got["createdUntil"] == "2026-01-01T00:07:00.000Z"
    assert h.client.get(_url(schedule_id), headers=h.alice.data).json() == got
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    assert stored is not None and stored.cursor_ms == T0 + 7 * MINUTE and stored.paused
    # a new start is taken
    moved = h.client.put(
        _url(schedule_id), json={**BODY, "start": T0 + 9_000}, headers=h.alice.data
    )
    assert moved.json()["start"] == "2026-01-01T00:00:09.000Z"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({**BODY, "expression": "0 25 * * *"}, 400, "invalid_expression"),
        ({**BODY, "expression": "0 0 9 * * MON"}, 400, "invalid_expression"),  # 6 fields
        ({**BODY, "expression": "rate(0 minutes)"}, 400, "invalid_expression"),
        ({"payload": 1}, 400, "invalid_expression"),  # missing
        ({**BODY, "timezone": "Mars/Olympus"}, 400, "invalid_timezone"),
        ({**BODY, "start": T0, "end": T0 - 1}, 400, "invalid_end"),
        ({**BODY, "start": "2026-01-01T00:00:00"}, 400, "invalid_start"),  # no offset
        ({**BODY, "end": 1_767_225_600}, 400, "invalid_end"),  # seconds
        ({**BODY, "maxOccurrences": 0}, 400, "invalid_maxOccurrences"),
        ({**BODY, "catchUp": "some"}, 400, "invalid_catchUp"),
        ({**BODY, "catchUpLimit": 5}, 400, "invalid_catchUp"),  # without all
        ({**BODY, "kafkaKey": "k" * 257}, 400, "invalid_kafka_key"),
        ({**BODY, "paused": "yes"}, 400, "invalid_paused"),
        ({**BODY, "sendAt": T0}, 400, "unknown_field"),
        ({"expression": "@daily"}, 400, "missing_payload"),
        ({"expression": "@daily", "payload": None}, 400, "missing_payload"),
        ({"expression": "@daily", "payload": "x" * 300_000}, 413, "payload_too_large"),
        ([BODY], 400, "invalid_request"),
    ],
)
def test_create_refuses_a_bad_body(h: Harness, body: Any, status: int, error: str) -> None:
    r = h.client.post("/schedules", json=body, headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert h.schedules.list(h.alice.app_id, None, 10).items == []


def test_the_messages_of_refusals_name_the_field(h: Harness) -> None:
    six = h.client.post(
        "/schedules", json={**BODY, "expression": "0 0 9 * * *"}, headers=h.alice.data
    )
    assert "rate(30 seconds)" in six.json()["message"]
    start = h.client.post("/schedules", json={**BODY, "start": "soon"}, headers=h.alice.data)
    assert "start 'soon'" in start.json()["message"], start.text
    bad_json = h.client.post(
        "/schedules",
        content=b"{",
        headers={**h.alice.data, "Content-Type": "application/json"},
    )
    assert (bad_json.status_code, bad_json.json()["error"]) == (400, "invalid_json")


def test_update_refuses_paused_and_bad_bodies(h: Harness) -> None:
    schedule_id = _create(h)
    r = h.client.put(_url(schedule_id), json={**BODY, "paused": True}, headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (400, "unknown_field")
    assert "/pause" in r.json()["message"]
    r = h.client.put(_url(schedule_id), json={"expression": "@daily"}, headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (400, "missing_payload")
    r = h.client.put(_url(schedule_id), json={**BODY, "timezone": "x"}, headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_timezone")
    assert h.client.get(_url(schedule_id), headers=h.alice.data).json()["timezone"] == (
        "Europe/Berlin"
    )


def _every_route(schedule_id: str, prefix: str = "") -> list[tuple[str, str, Any]]:
    url = f"{prefix}/schedules/{schedule_id}"
    return [
        ("GET", url, None),
        ("PUT", url, BODY),
        ("PUT", f"{url}/pause", None),
        ("PUT", f"{url}/resume", None),
        ("DELETE", url, None),
    ]


@pytest.mark.parametrize("schedule_id", ["0" * 26, "not-a-ulid", "8" + "0" * 25])
def test_unknown_or_malformed_ids_are_404(h: Harness, schedule_id: str) -> None:
    for method, url, body in _every_route(schedule_id):
        r = h.client.request(method, url, json=body, headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, url, r.text)


def test_a_deleted_schedule_is_gone_for_every_route(h: Harness) -> None:
    schedule_id = _create(h)
    r = h.client.delete(_url(schedule_id), headers=h.alice.data)
    assert r.json() == {"id": schedule_id, "deleted": True}
    for method, url, body in _every_route(schedule_id):
        r = h.client.request(method, url, json=body, headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, url)
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    # not undeleted, and the resume above changed nothing (a delete pauses first)
    assert stored is not None and stored.deleted_ms == T0 and stored.paused


def test_another_apps_schedule_is_404_with_its_data_key_and_another_owners_control_key(
    h: Harness,
) -> None:
    schedule_id = _create(h)
    before = h.client.get(_url(schedule_id), headers=h.alice.data).json()
    for method, url, body in _every_route(schedule_id):
        r = h.client.request(method, url, json=body, headers=h.bob.data)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, url)
    # bob's control key: alice's app is not his; his own app does not hold the schedule
    for method, url, body in _every_route(schedule_id, f"/applications/{h.alice.app_id}"):
        r = h.client.request(method, url, json=body, headers=h.bob.control)
        assert (r.status_code, r.json()["error"]) == (404, "app_not_found"), (method, url)
    for method, url, body in _every_route(schedule_id, f"/applications/{h.bob.app_id}"):
        r = h.client.request(method, url, json=body, headers=h.bob.control)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, url)
    r = h.client.get(f"/applications/{h.alice.app_id}/schedules", headers=h.bob.control)
    assert r.status_code == 404
    assert h.client.get("/schedules", headers=h.bob.data).json()["schedules"] == []
    assert h.client.get(_url(schedule_id), headers=h.alice.data).json() == before


def test_keys_of_the_other_kind_are_refused(h: Harness) -> None:
    assert h.client.post("/schedules", json=BODY, headers=h.alice.control).status_code == 403
    r = h.client.get(f"/applications/{h.alice.app_id}/schedules", headers=h.alice.data)
    assert r.status_code == 403
    assert h.client.get("/schedules").status_code == 401


# -- pause, resume and delete abort what the runner created ahead --------------------------------


def _created_ahead(h: Harness, schedule_id: str, until_ms: int) -> list[int]:
    """What the runner does: occurrence records READY up to `until_ms`, then the cursor."""
    schedule = h.schedules.get(h.alice.app_id, schedule_id)
    assert schedule is not None
    now = h.clock.now_ms()
    instants = schedule.recurrence.occurrences_between(T0, until_ms, 100)
    for instant in instants:
        request = occurrence_request(schedule, instant, now)
        h.messages.save(
            MessageContent.of_request(request),
            StatusUpdate(Status.READY, 0, FIRST_ATTEMPT, instant, now),
            LogEntry(now, "0:1:scheduled", Status.READY),
        )
    h.usage.add_pending(h.alice.app_id, len(instants))
    h.schedules.advance_cursor(h.alice.app_id, schedule_id, until_ms)
    return instants


def _statuses(h: Harness, schedule_id: str, instants: list[int]) -> list[Status]:
    out = []
    for instant in instants:
        view = h.messages.get(
            h.alice.app_id, occurrence_message_id(h.alice.app_id, schedule_id, instant)
        )
        assert view is not None
        out.append(view.state.status)
    return out


def _aborted_commands(h: Harness) -> list[str]:
    commands = h.published_commands()
    assert all(c.kind is CommandKind.ABORT and c.generation == 0 for c in commands)
    return [c.message_id for c in commands]


def _ids(h: Harness, schedule_id: str, instants: list[int]) -> list[str]:
    return [occurrence_message_id(h.alice.app_id, schedule_id, t) for t in instants]


def test_pause_aborts_the_occurrences_created_ahead_beyond_the_guard(h: Harness) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 5 * MINUTE)
    assert instants == [T0 + k * MINUTE for k in range(1, 6)]
    h.clock.set(T0 + MINUTE - GUARD)  # the first is due within the guard: it is delivered
    r = h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data)
    assert r.status_code == 200, r.text
    assert (r.json()["paused"], r.json()["nextOccurrence"]) == (True, None)
    aborted = instants[1:]
    assert _statuses(h, schedule_id, instants) == [Status.READY] + [Status.ABORTED] * 4
    assert sorted(_aborted_commands(h)) == sorted(_ids(h, schedule_id, aborted))
    assert h.usage.pending(h.alice.app_id) == 1
    view = h.messages.get(h.alice.app_id, _ids(h, schedule_id, aborted)[0])
    assert view is not None and view.state.at_ms == T0 + MINUTE - GUARD
    log = h.client.get(f"/messages/{_ids(h, schedule_id, aborted)[0]}/logs", headers=h.alice.data)
    assert log.json()["logs"][-1]["data"] == {"by": "schedule paused"}

    # paused again (a retry): the same aborts again, harmless; pending is not moved twice
    again = h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data)
    assert again.status_code == 200
    assert len(_aborted_commands(h)) == 8 and h.usage.pending(h.alice.app_id) == 1

    # resume: the aborted ones come back (next test); the runner goes on after its cursor
    h.clock.advance(1_000)
    resumed = h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data)
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert resumed.json()["nextOccurrence"] == "2026-01-01T00:06:00.000Z"
    assert _statuses(h, schedule_id, instants) == [Status.READY] * 5
    assert h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data).status_code == 200
    # operations are counted by route template, as every request
    counted = h.registry.get_sample_value(
        "scheduler_ingest_requests_total",
        {"route": "/schedules/{scheduleId}/pause", "method": "PUT", "status": "200"},
    )
    assert counted == 2.0


def _generations(h: Harness, schedule_id: str, instants: list[int]) -> list[tuple[Status, int]]:
    views = [h.messages.get(h.alice.app_id, i) for i in _ids(h, schedule_id, instants)]
    return [(v.state.status, v.state.generation) for v in views if v is not None]


def _commands(h: Harness, kind: CommandKind) -> list[tuple[str, int, int | None]]:
    return [
        (c.message_id, c.generation, c.send_at_ms) for c in h.published_commands() if c.kind is kind
    ]


def test_a_resume_brings_back_the_occurrences_its_pause_aborted_at_their_own_instants(
    h: Harness,
) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 5 * MINUTE)
    h.clock.set(T0 + 30_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    assert _statuses(h, schedule_id, instants) == [Status.ABORTED] * 5
    assert h.usage.pending(h.alice.app_id) == 0
    h.clock.set(T0 + 50_000)  # 10 s before the first: paused for 20 s
    r = h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data)
    assert r.status_code == 200, r.text
    assert _generations(h, schedule_id, instants) == [(Status.READY, 1)] * 5
    ids = _ids(h, schedule_id, instants)
    # the REDRIVE commands, each due at its occurrence: delivered as if never paused
    assert _commands(h, CommandKind.REDRIVE) == [
        (i, 1, t) for i, t in zip(ids, instants, strict=True)
    ]
    assert h.usage.pending(h.alice.app_id) == 5
    log = h.client.get(f"/messages/{ids[0]}/logs", headers=h.alice.data).json()["logs"]
    assert (log[-1]["status"], log[-1]["data"]) == ("READY", {"by": "schedule resumed"})

    # a repeated resume publishes the commands again (one may have been lost), moves nothing
    assert h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data).status_code == 200
    assert len(_commands(h, CommandKind.REDRIVE)) == 10 and h.usage.pending(h.alice.app_id) == 5

    # paused again: the revived generation is the one aborted
    h.clock.set(T0 + 55_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    assert _generations(h, schedule_id, instants) == [(Status.ABORTED, 1)] * 5
    assert [c[:2] for c in _commands(h, CommandKind.ABORT)][5:] == [(i, 1) for i in ids]
    assert h.usage.pending(h.alice.app_id) == 0


@pytest.mark.parametrize(
    ("catch_up", "revived"),
    [
        ({"catchUp": "latest"}, [3]),
        ({"catchUp": "skip"}, []),
        ({"catchUp": "all", "catchUpLimit": 2}, [2, 3]),
    ],
)
def test_what_came_due_while_paused_follows_the_catch_up_policy(
    h: Harness, catch_up: dict[str, Any], revived: list[int]
) -> None:
    """Created ahead, aborted by the pause, due before the resume: missed, like an occurrence
    the runner had not created yet; each kept one is due at the resume."""
    schedule_id = _create(h, {**EVERY_MINUTE, **catch_up})
    instants = _created_ahead(h, schedule_id, T0 + 5 * MINUTE)
    h.clock.set(T0 + 30_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    resumed_at = T0 + 3 * MINUTE + 30_000  # 1, 2 and 3 came due while paused
    h.clock.set(resumed_at)
    assert h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data).status_code == 200
    ids = _ids(h, schedule_id, instants)
    missed = [(ids[k - 1], 1, resumed_at) for k in revived]
    ahead = [(ids[k - 1], 1, instants[k - 1]) for k in (4, 5)]
    assert sorted(_commands(h, CommandKind.REDRIVE)) == sorted(ahead + missed)
    brought_back = {k for k in range(1, 6) if k in revived or k > 3}
    expected = [
        (Status.READY, 1) if k in brought_back else (Status.ABORTED, 0) for k in range(1, 6)
    ]
    assert _generations(h, schedule_id, instants) == expected


def test_missed_ones_after_the_cursor_are_left_to_the_runner_s_catch_up(h: Harness) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 2 * MINUTE)
    h.clock.set(T0 + 30_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    h.clock.set(T0 + 10 * MINUTE)  # the runner has 3..10 to catch up: its latest is newer
    assert h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data).status_code == 200
    assert _commands(h, CommandKind.REDRIVE) == []
    assert _statuses(h, schedule_id, instants) == [Status.ABORTED] * 2


def test_an_occurrence_its_user_aborted_stays_aborted_through_a_pause_and_a_resume(
    h: Harness,
) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 3 * MINUTE)
    ids = _ids(h, schedule_id, instants)
    h.clock.set(T0 + 10_000)
    assert h.client.put(f"/messages/{ids[1]}/abort", headers=h.alice.data).status_code == 200
    h.clock.set(T0 + 20_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    log = h.client.get(f"/messages/{ids[1]}/logs", headers=h.alice.data).json()["logs"]
    assert [e["data"].get("by") for e in log if e["status"] == "ABORTED"] == ["api"]
    h.clock.set(T0 + 30_000)
    assert h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data).status_code == 200
    assert _generations(h, schedule_id, instants) == [
        (Status.READY, 1),
        (Status.ABORTED, 0),
        (Status.READY, 1),
    ]


def test_a_resume_whose_commands_fail_is_503_and_a_retry_brings_them_back(h: Harness) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 2 * MINUTE)
    h.clock.set(T0 + 10_000)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    h.clock.set(T0 + 20_000)
    h.fake.fail_with = PublishError("kafka_error", "down")
    r = h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable"
    # resumed, but nothing started without its command
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    assert stored is not None and not stored.paused
    assert _statuses(h, schedule_id, instants) == [Status.ABORTED] * 2
    h.fake.fail_with = None
    assert h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data).status_code == 200
    assert _generations(h, schedule_id, instants) == [(Status.READY, 1)] * 2
    assert h.usage.pending(h.alice.app_id) == 2


class _PausedAfterTheRevival(InMemoryScheduleStore):
    """A pause by another replica that lands while a resume brings occurrences back: after the
    resume's read of the flag, before its read after the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_at_read: int | None = None
        self.reads = 0

    def get(self, app_id: str, schedule_id: str) -> Any:
        self.reads += 1
        if self.reads == self.pause_at_read:
            self.set_paused(app_id, schedule_id, True, T0 + 40_000)
        return super().get(app_id, schedule_id)


def test_a_pause_that_races_a_resume_aborts_what_the_resume_brought_back() -> None:
    store = _PausedAfterTheRevival()
    h = Harness(schedules=store)
    try:
        schedule_id = _create(h, EVERY_MINUTE)
        instants = _created_ahead(h, schedule_id, T0 + 2 * MINUTE)
        h.clock.set(T0 + 10_000)
        assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
        h.clock.set(T0 + 30_000)
        store.pause_at_read = store.reads + 3  # the route's reads: exists, after the flag, after
        r = h.client.put(_url(schedule_id, "/resume"), headers=h.alice.data)
        assert r.status_code == 200 and r.json()["paused"] is True
        assert _generations(h, schedule_id, instants) == [(Status.ABORTED, 1)] * 2
        assert h.usage.pending(h.alice.app_id) == 0
    finally:
        h.close()


def test_delete_aborts_the_occurrences_created_ahead_beyond_the_guard(h: Harness) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 3 * MINUTE)
    h.clock.set(T0 + MINUTE - GUARD - 1)  # just outside the guard: the first is aborted too
    r = h.client.delete(
        f"/applications/{h.alice.app_id}/schedules/{schedule_id}", headers=h.alice.control
    )
    assert r.status_code == 200, r.text
    assert _statuses(h, schedule_id, instants) == [Status.ABORTED] * 3
    assert sorted(_aborted_commands(h)) == sorted(_ids(h, schedule_id, instants))
    assert h.usage.pending(h.alice.app_id) == 0
    log = h.client.get(f"/messages/{_ids(h, schedule_id, instants)[0]}/logs", headers=h.alice.data)
    assert log.json()["logs"][-1]["data"] == {"by": "schedule deleted"}


def test_pause_or_delete_with_nothing_created_ahead_publishes_nothing(h: Harness) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + MINUTE)
    h.clock.set(T0 + MINUTE - GUARD)
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    assert h.client.delete(_url(schedule_id), headers=h.alice.data).status_code == 200
    assert _statuses(h, schedule_id, instants) == [Status.READY]
    assert h.published_commands() == []


def test_a_pause_whose_commands_fail_is_503_but_stays_written(h: Harness) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 2 * MINUTE)
    h.fake.fail_with = PublishError("kafka_error", "down")
    r = h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    assert r.headers["Retry-After"] == str(h.settings.retry_after_s)
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    assert stored is not None and stored.paused
    # the records are ABORTED: the dispatcher checks them before it delivers
    assert _statuses(h, schedule_id, instants) == [Status.ABORTED] * 2
    assert h.usage.pending(h.alice.app_id) == 0
    h.fake.fail_with = None
    assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
    assert sorted(_aborted_commands(h)) == sorted(_ids(h, schedule_id, instants))
    assert h.usage.pending(h.alice.app_id) == 0


class _RunnerTicksDuringThePause(InMemoryScheduleStore):
    """A runner tick that lands between the route's first read and its pause write: it
    created occurrences and advanced the cursor, which only the read after the write sees."""

    def __init__(self) -> None:
        super().__init__()
        self.tick_at_pause: int | None = None

    def set_paused(self, app_id: str, schedule_id: str, paused: bool, at_ms: int) -> None:
        if paused and self.tick_at_pause is not None:
            self.advance_cursor(app_id, schedule_id, self.tick_at_pause)
        super().set_paused(app_id, schedule_id, paused, at_ms)


def test_pause_aborts_up_to_the_cursor_read_after_its_write() -> None:
    store = _RunnerTicksDuringThePause()
    h = Harness(schedules=store)
    try:
        schedule_id = _create(h, EVERY_MINUTE)
        store.tick_at_pause = T0 + 3 * MINUTE
        assert h.client.put(_url(schedule_id, "/pause"), headers=h.alice.data).status_code == 200
        instants = [T0 + k * MINUTE for k in (1, 2, 3)]
        assert sorted(_aborted_commands(h)) == sorted(_ids(h, schedule_id, instants))
    finally:
        h.close()


class _PausedAfterTheRead(InMemoryScheduleStore):
    """A pause by another request that lands between the update's read and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_after_next_get = False

    def get(self, app_id: str, schedule_id: str) -> Any:
        found = super().get(app_id, schedule_id)
        if self.pause_after_next_get:
            self.pause_after_next_get = False
            self.set_paused(app_id, schedule_id, True, T0)
        return found


def test_an_update_does_not_undo_a_pause_that_raced_it() -> None:
    store = _PausedAfterTheRead()
    h = Harness(schedules=store)
    try:
        schedule_id = _create(h, EVERY_MINUTE)
        store.pause_after_next_get = True
        r = h.client.put(
            _url(schedule_id), json={**EVERY_MINUTE, "payload": "new"}, headers=h.alice.data
        )
        assert r.status_code == 200, r.text
        stored = store.get(h.alice.app_id, schedule_id)
        assert stored is not None and stored.paused and stored.payload_json == '"new"'
    finally:
        h.close()


def test_a_delete_whose_commands_fail_keeps_the_schedule_so_that_a_retry_finishes_it(
    h: Harness,
) -> None:
    schedule_id = _create(h, EVERY_MINUTE)
    instants = _created_ahead(h, schedule_id, T0 + 2 * MINUTE)
    h.fake.fail_with = PublishError("kafka_error", "down")
    r = h.client.delete(_url(schedule_id), headers=h.alice.data)
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    assert stored is not None and stored.deleted_ms is None and stored.paused  # stopped, not gone
    h.fake.fail_with = None
    assert h.client.delete(_url(schedule_id), headers=h.alice.data).status_code == 200
    assert sorted(_aborted_commands(h)) == sorted(_ids(h, schedule_id, instants))
    assert h.client.get(_url(schedule_id), headers=h.alice.data).status_code == 404
