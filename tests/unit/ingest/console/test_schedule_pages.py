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
    assert "Schedule resumed; occurrences its pause aborted" in r.text and "running" in r.text


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
    for action in ("pause", "resume", "delete", "edit"):
        for app in (h.bob.app_id, h.alice.app_id):
            path = f"/apps/{app}/schedules/{bob_schedule}/{action}"
            assert alice.post(path, {"confirmed": "yes", **FORM}).status_code == 404, path
    assert alice.get(f"/apps/{h.alice.app_id}/schedules/{bob_schedule}/edit").status_code == 404
    assert alice.post(f"/apps/{h.bob.app_id}/schedules/new", FORM).status_code == 404
    stored = h.schedules.get(h.bob.app_id, bob_schedule)
    assert stored is not None and not stored.paused and stored.deleted_ms is None
    assert stored.recurrence.expression == "@daily"


def test_edit_shows_the_stored_definition_and_saves_a_new_one(h: Harness, alice: Browser) -> None:
    schedule_id = create(
        h,
        alice,
        catch_up="all",
        catch_up_limit="7",
        flexible_window="2.5",
        end="2027-01-01T00:00:00Z",
    )
    here = f"/apps/{h.alice.app_id}/schedules/{schedule_id}"
    assert f'href="/console{here}/edit"' in alice.get(here).text
    form = html.unescape(alice.get(f"{here}/edit").text)
    for shown in (
        'value="0 9 * * MON-FRI"',
        'value="Europe/Berlin"',
        'value="2026-01-01T00:00:00.000Z"',  # the start it was given (its creation)
        'value="2027-01-01T00:00:00.000Z"',
        '<option value="all" selected>',
        'value="7"',
        'value="2.5"',
        '{"report":"daily"}',
        "Save",
    ):
        assert shown in form, shown
    before = h.schedules.get(h.alice.app_id, schedule_id)
    assert before is not None
    h.clock.advance(1_000)
    edited = {**FORM, "expression": "rate(15 minutes)", "catch_up": "skip", "payload": '"tick"'}
    r = alice.post(f"{here}/edit", {**edited, "start": "2026-01-01T00:00:00.000Z"})
    assert r.status_code == 200 and "Schedule saved" in r.text, r.text
    after = h.schedules.get(h.alice.app_id, schedule_id)
    assert after is not None
    assert (after.recurrence.expression, after.recurrence.catch_up.value) == (
        "rate(15 minutes)",
        "skip",
    )
    assert after.payload_json == '"tick"' and after.flexible_window_ms is None
    assert (after.created_ms, after.cursor_ms) == (before.created_ms, before.cursor_ms)

    # a refusal shows the form again, with what was typed, and changes nothing
    bad = alice.post(f"{here}/edit", {**edited, "expression": "61 * * * *"})
    assert bad.status_code == 400 and "61 * * * *" in html.unescape(bad.text)
    assert "Edit schedule" in bad.text
    unchanged = h.schedules.get(h.alice.app_id, schedule_id)
    assert unchanged is not None and unchanged.recurrence.expression == "rate(15 minutes)"
