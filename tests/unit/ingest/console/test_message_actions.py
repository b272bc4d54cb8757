"""The console's answers to a receiver outage: reschedule a message from its page. The ingest
app's fakes and a ManualClock."""

from __future__ import annotations

import html
import re

import pytest

from scheduler.domain.status import Status
from scheduler.records import CommandKind
from scheduler.store.ports import StatusUpdate
from scheduler_ingest.publisher import PublishError
from tests.unit.ingest.console.browser import Browser
from tests.unit.ingest.console.test_pages import schedule, set_status
from tests.unit.ingest.harness import SCHEDULING, T0, Harness

pytestmark = pytest.mark.unit

HOUR = 3_600_000
GUARD = SCHEDULING.cancel_guard_ms


def page_of(h: Harness, message_id: str) -> str:
    return f"/apps/{h.alice.app_id}/messages/{message_id}"


def state(h: Harness, message_id: str, app_id: str | None = None) -> StatusUpdate:
    view = h.messages.get(app_id or h.alice.app_id, message_id)
    assert view is not None
    return view.state


def typed_value(page: str, field_id: str) -> str:
    found = re.search(rf'id="{field_id}" name="[^"]+" value="([^"]*)"', page)
    assert found, f"no input {field_id}"
    return html.unescape(found.group(1))


# -- reschedule -------------------------------------------------------------------------------


def test_reschedule_a_ready_message_from_its_page(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    page = alice.get(page_of(h, message_id)).text
    # The form: the current due time first, and which zone a time is read in.
    assert f'action="/console{page_of(h, message_id)}/reschedule"' in page
    assert typed_value(page, "send_at") == "2026-01-01T00:10:00.000Z"
    assert "Z is UTC" in page and "offset" in page
    h.clock.advance(5)
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T02:00:00+01:00"})
    assert r.status_code == 200 and r.url.path == "/console" + page_of(h, message_id)
    said = html.unescape(r.text)
    assert f"Message {message_id} rescheduled: due at 2026-01-01T01:00:00.000Z" in said
    assert "(generation 1)" in said
    assert "<dd>2026-01-01T01:00:00.000Z</dd>" in r.text  # due at, on the page
    assert "<dd>1 / 1</dd>" in r.text  # generation / attempt
    moved = state(h, message_id)
    assert (moved.status, moved.generation, moved.attempt, moved.due_ms) == (
        Status.READY,
        1,
        1,
        T0 + HOUR,
    )
    # The same service call as the API's: the old generation aborted, the new one due later.
    abort, redrive = h.published_commands()
    assert (abort.kind, abort.generation, abort.send_at_ms) == (CommandKind.ABORT, 0, T0 + 600_000)
    assert (redrive.kind, redrive.generation, redrive.send_at_ms) == (
        CommandKind.REDRIVE,
        1,
        T0 + HOUR,
    )
    assert "by=console, reason=rescheduled" in r.text  # the log says who


def test_reschedule_a_queued_message(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    set_status(h, message_id, Status.QUEUED)
    assert "Reschedule" in alice.get(page_of(h, message_id)).text
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T00:05:00Z"})
    assert r.status_code == 200 and "rescheduled: due at 2026-01-01T00:05:00.000Z" in r.text
    moved = state(h, message_id)
    assert (moved.status, moved.generation, moved.due_ms) == (Status.READY, 1, T0 + 300_000)


def test_reschedule_within_the_guard_is_too_late(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 60_000)
    alice.get(page_of(h, message_id))
    h.clock.advance(60_000 - GUARD)  # due within the cancel guard now
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T05:00:00Z"})
    assert r.status_code == 409
    said = html.unescape(r.text)
    assert f"Too late to reschedule: the message is due within {GUARD} ms" in said
    assert "It was not moved." in said and 'role="alert"' in r.text
    assert typed_value(r.text, "send_at") == "2026-01-01T05:00:00Z"  # what was typed, kept
    kept = state(h, message_id)
    assert (kept.status, kept.generation, kept.due_ms) == (Status.READY, 0, T0 + 60_000)
    assert h.published_commands() == []


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("2030-01-01T12:00:00", "is not an RFC 3339 timestamp with an offset"),
        ("tomorrow 9 <am>", "is not an RFC 3339 timestamp with an offset"),
        ("2030-02-30T12:00:00Z", "not a valid calendar date and time"),
        ("2025-12-01T00:00:00Z", "in the past"),  # the service's horizon check
        ("", "Enter the new send time"),
    ],
)
def test_a_bad_time_is_shown_with_what_was_typed(
    h: Harness, alice: Browser, typed: str, shown: str
) -> None:
    message_id = schedule(h, T0 + 600_000)
    alice.get(page_of(h, message_id))
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": typed})
    assert r.status_code == 400
    assert shown in html.unescape(r.text)
    assert 'aria-invalid="true"' in r.text and 'id="send_at-error"' in r.text
    assert typed_value(r.text, "send_at") == typed
    assert (state(h, message_id).generation, h.published_commands()) == (0, [])


def test_a_sent_message_is_not_reschedulable(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    set_status(h, message_id, Status.SENT)
    page = alice.get(page_of(h, message_id)).text
    assert "/reschedule" not in page and "Reschedule" not in page  # no form for it
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T05:00:00Z"})
    assert r.status_code == 409
    assert "Not rescheduled: the message is SENT; only READY or QUEUED." in r.text
    assert typed_value(r.text, "send_at") == "2026-01-01T05:00:00Z"
    assert state(h, message_id).status is Status.SENT


def test_a_reschedule_kafka_did_not_acknowledge_can_be_completed(
    h: Harness, alice: Browser
) -> None:
    message_id = schedule(h, T0 + 600_000)
    alice.get(page_of(h, message_id))
    h.fake.fail_with = PublishError("kafka_error", "down")
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T05:00:00Z"})
    assert r.status_code == 503
    said = html.unescape(r.text)
    assert "Not finished: Kafka did not acknowledge a command of the reschedule" in said
    assert "reschedule it again, to any time, to complete it" in said.lower()
    assert typed_value(r.text, "send_at") == "2026-01-01T05:00:00Z"
    assert state(h, message_id).status is Status.ABORTED  # not delivered at its old time
    # The page says so afterwards too, and keeps the form.
    assert "was interrupted" in alice.get(page_of(h, message_id)).text
    h.fake.fail_with = None
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T05:00:00Z"})
    assert r.status_code == 200 and "rescheduled: due at 2026-01-01T05:00:00.000Z" in r.text
    done = state(h, message_id)
    assert (done.status, done.generation, done.due_ms) == (Status.READY, 1, T0 + 5 * HOUR)
    assert "was interrupted" not in r.text


def test_the_list_links_to_the_reschedule_form(h: Harness, alice: Browser) -> None:
    ready, failed = schedule(h, T0 + 600_000), schedule(h, T0 + 600_000)
    set_status(h, failed, Status.FAILED)
    page = alice.get(f"/apps/{h.alice.app_id}/messages").text
    assert f'href="/console{page_of(h, ready)}#reschedule"' in page
    assert f"{page_of(h, failed)}#reschedule" not in page


# -- another owner's, CSRF --------------------------------------------------------------------


def test_another_owners_app_is_not_found_and_nothing_changes(h: Harness, alice: Browser) -> None:
    r = h.schedule({"payload": "p", "sendAt": T0 + HOUR}, h.bob)
    bobs = str(r.json()["messageId"])
    alice.get("/apps")
    for app in (h.bob.app_id, h.alice.app_id):
        path = f"/apps/{app}/messages/{bobs}/reschedule"
        assert alice.post(path, {"send_at": "2026-01-01T05:00:00Z"}).status_code == 404, path
    assert state(h, bobs, h.bob.app_id).status is Status.READY
    assert state(h, bobs, h.bob.app_id).generation == 0
    assert h.published_commands() == []


def test_the_forms_need_the_csrf_token(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + HOUR)
    alice.get(page_of(h, message_id))
    r = alice.post(
        f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T05:00:00Z"}, csrf=False
    )
    assert r.status_code == 403 and "could not be accepted" in r.text
    alice.csrf = "forged"
    r = alice.post(f"{page_of(h, message_id)}/reschedule", {"send_at": "2026-01-01T05:00:00Z"})
    assert r.status_code == 403
    s = state(h, message_id)
    assert (s.status, s.generation) == (Status.READY, 0) and h.published_commands() == []
