"""The console's schedule pages with the ingest app's fakes: create (with the service's
validation), list, detail, pause and resume, delete with its confirmation, another owner's."""

from __future__ import annotations

import html

import pytest

from scheduler.domain.ids import occurrence_message_id
from scheduler.domain.status import Status
from tests.unit.ingest.console.browser import Browser
from tests.unit.ingest.harness import T0, Harness

pytestmark = pytest.mark.unit

FORM = {
    "expression": "0 9 * * MON-FRI",
    "timezone": "Europe/Berlin",
    "catch_up": "latest",
    "payload": '{"report": "daily"}',
}


def create(h: Harness, b: Browser, **changes: str) -> str:
    b.get(f"/apps/{h.alice.app_id}/schedules/new")
    r = b.post(f"/apps/{h.alice.app_id}/schedules/new", {**FORM, **changes})
    assert r.status_code == 200, r.text
    assert "Schedule created." in r.text
    return r.url.path.rsplit("/", 1)[1]


def test_create_then_list_and_detail(h: Harness, alice: Browser) -> None:
    schedule_id = create(h, alice)
    stored = h.schedules.get(h.alice.app_id, schedule_id)
    assert stored is not None and stored.recurrence.timezone == "Europe/Berlin"
    assert stored.payload_json == '{"report":"daily"}'
    page = html.unescape(alice.get(f"/apps/{h.alice.app_id}/schedules").text)
    assert schedule_id in page and "0 9 * * MON-FRI" in page and "running" in page
    detail = html.unescape(alice.get(f"/apps/{h.alice.app_id}/schedules/{schedule_id}").text)
    assert "Europe/Berlin" in detail and f"schedule:{schedule_id}" in detail
    assert "Pause" in detail and "2026-01-01T08:00:00.000Z" in detail  # Friday 09:00 in Berlin


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"expression": "0 0 9 * * *"}, "has 6 field(s)"),
        ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"payload": "not json"}, "not valid JSON"),
        ({"max_occurrences": "ten"}, "whole number"),
    ],
)
def test_a_refused_form_is_shown_again_with_the_reason(
    h: Harness, alice: Browser, changes: dict[str, str], shown: str
) -> None:
    alice.get(f"/apps/{h.alice.app_id}/schedules/new")
    r = alice.post(f"/apps/{h.alice.app_id}/schedules/new", {**FORM, **changes})
    assert r.status_code == 400 and shown in html.unescape(r.text), r.text
    assert list(h.schedules.scan_timings()) == []
    assert html.escape(next(iter(changes.values()))) in r.text  # what was typed is kept


def test_pause_aborts_what_was_created_ahead_and_resume(h: Harness, alice: Browser) -> None:
    schedule_id = create(h, alice, expression="rate(1 minute)")
    h.schedules.advance_cursor(h.alice.app_id, schedule_id, T0 + 5 * 60_000)  # as the runner
    alice.get(f"/apps/{h.alice.app_id}/schedules/{schedule_id}")
    r = alice.post(f"/apps/{h.alice.app_id}/schedules/{schedule_id}/pause")
    assert "Schedule paused" in r.text and "Resume" in r.text
    aborted = [c.message_id for c in h.published_commands()]
    assert aborted == [
        occurrence_message_id(h.alice.app_id, schedule_id, T0 + k * 60_000) for k in range(1, 6)
    ]
    view = h.messages.get(h.alice.app_id, aborted[0])
    assert view is None or view.state.status is Status.ABORTED  # kept for when it is stored
    h.clock.advance(1)  # flag changes are ordered by their instants (a tie: paused)
    r = alice.post(f"/apps/{h.alice.app_id}/schedules/{schedule_id}/resume")
    assert "Schedule resumed." in r.text and "running" in r.text


def test_delete_asks_first(h: Harness, alice: Browser) -> None:
    schedule_id = create(h, alice)
    path = f"/apps/{h.alice.app_id}/schedules/{schedule_id}/delete"
    alice.get(f"/apps/{h.alice.app_id}/schedules/{schedule_id}")
    asked = alice.post(path)
    assert f"Delete schedule {schedule_id}?" in asked.text
    assert h.schedules.get(h.alice.app_id, schedule_id).deleted_ms is None  # type: ignore[union-attr]
    r = alice.post(path, {"confirmed": "yes"})
    assert r.url.path == f"/console/apps/{h.alice.app_id}/schedules"
    assert f"Schedule {schedule_id} deleted." in r.text
    assert alice.get(f"/apps/{h.alice.app_id}/schedules/{schedule_id}").status_code == 404


def test_another_owners_schedules_are_not_found(h: Harness, alice: Browser) -> None:
    bobs = h.client.post(
        "/schedules", headers=h.bob.data, json={"expression": "@daily", "payload": 1}
    )
    assert bobs.status_code == 200, bobs.text
    bob_schedule = bobs.json()["scheduleId"]
    alice.get("/apps")
    for path in (
        f"/apps/{h.bob.app_id}/schedules",
        f"/apps/{h.bob.app_id}/schedules/{bob_schedule}",
        f"/apps/{h.alice.app_id}/schedules/{bob_schedule}",
    ):
        assert alice.get(path).status_code == 404, path
    for action in ("pause", "resume", "delete"):
        for app in (h.bob.app_id, h.alice.app_id):
            path = f"/apps/{app}/schedules/{bob_schedule}/{action}"
            assert alice.post(path, {"confirmed": "yes"}).status_code == 404, path
    assert alice.post(f"/apps/{h.bob.app_id}/schedules/new", FORM).status_code == 404
    stored = h.schedules.get(h.bob.app_id, bob_schedule)
    assert stored is not None and not stored.paused and stored.deleted_ms is None
