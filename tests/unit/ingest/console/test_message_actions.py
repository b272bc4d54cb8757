"""The console's answers to a receiver outage: reschedule a message from its page, and abort or
redrive every message of a filter from the messages page (confirmed first, looped over the
cursor within bounds, a "continue" for the rest). The ingest app's fakes and a ManualClock."""

from __future__ import annotations

import html
import re

import pytest

from scheduler.clock import ManualClock
from scheduler.domain.status import Status
from scheduler.records import CommandKind
from scheduler.store.ports import MessagePage, StatusUpdate
from scheduler.testing.fakes import InMemoryMessageStore
from scheduler_ingest import bulk
from scheduler_ingest.console import routes_messages
from scheduler_ingest.publisher import PublishError
from scheduler_ingest.settings import IngestSettings
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


# -- bulk abort and redrive -------------------------------------------------------------------


def bulk_post(b: Browser, h: Harness, form: dict[str, str]) -> str:
    r = b.post(f"/apps/{h.alice.app_id}/messages/bulk", form)
    assert r.status_code == 200, r.text
    return html.unescape(r.text)


def test_bulk_abort_of_a_send_time_range_asks_first(h: Harness, alice: Browser) -> None:
    before, first, second, after = (
        schedule(h, T0 + k * HOUR)
        for k in (1, 2, 3, 5)  # 01:00, 02:00, 03:00, 05:00 UTC
    )
    h.clock.advance(1)
    page = alice.get(f"/apps/{h.alice.app_id}/messages").text
    assert "Bulk actions" in page and 'action="/console/apps/' in page
    form = {
        "action": "abort",
        "send_at_from": "2026-01-01T02:30:00+01:00",  # 01:30 UTC
        "send_at_to": "2026-01-01T04:00:00Z",
    }
    asked = bulk_post(alice, h, form)
    # The confirmation states the filter, the range in UTC; nothing changed yet.
    assert "Abort READY and QUEUED messages?" in asked
    assert (
        "every READY or QUEUED message with a send time at or after 2026-01-01T01:30:00.000Z"
        " and before 2026-01-01T04:00:00.000Z" in asked
    )
    assert 'name="confirmed" value="yes"' in asked
    assert 'name="send_at_from" value="2026-01-01T02:30:00+01:00"' in asked
    assert all(state(h, m).status is Status.READY for m in (before, first, second, after))
    assert h.published_commands() == []
    done = bulk_post(alice, h, {**form, "confirmed": "yes"})
    assert re.search(r"<dt>Aborted</dt><dd>2</dd>", done)
    assert re.search(r"<dt>Too late</dt><dd>0 ", done)
    assert re.search(r"<dt>Not abortable</dt><dd>0 ", done)
    assert re.search(r"<dt>Failed</dt><dd>0 ", done)
    assert re.search(r"<dt>Messages read</dt><dd>4 ", done)
    assert "Done: every message of the application was read." in done
    assert "Continue" not in done
    statuses = [state(h, m).status for m in (before, first, second, after)]
    assert statuses == [Status.READY, Status.ABORTED, Status.ABORTED, Status.READY]
    (entry,) = [e for e in h.messages.logs(h.alice.app_id, first) if e.status is Status.ABORTED]
    assert entry.data["by"] == "console"


def test_bulk_abort_counts_the_ones_too_late(h: Harness, alice: Browser) -> None:
    soon, later = schedule(h, T0 + 60_000), schedule(h, T0 + HOUR)
    h.clock.advance(60_000 - GUARD)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    done = bulk_post(alice, h, {"action": "abort_ready", "confirmed": "yes"})
    assert "every READY message whatever its send time" in done
    assert re.search(r"<dt>Aborted</dt><dd>1</dd>", done)
    assert re.search(r"<dt>Too late</dt><dd>1 ", done)
    assert (state(h, soon).status, state(h, later).status) == (Status.READY, Status.ABORTED)


def test_bulk_redrive_of_failed_messages(h: Harness, alice: Browser) -> None:
    failed = [schedule(h, T0 + k * HOUR) for k in (1, 2)]
    ready = schedule(h, T0 + 3 * HOUR)
    for m in failed:
        set_status(h, m, Status.FAILED, attempt=3)
    h.clock.advance(1)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    asked = bulk_post(alice, h, {"action": "redrive"})
    assert "Redrive FAILED messages?" in asked and "every FAILED message" in asked
    assert all(state(h, m).status is Status.FAILED for m in failed)
    done = bulk_post(alice, h, {"action": "redrive", "confirmed": "yes"})
    assert re.search(r"<dt>Redriven</dt><dd>2</dd>", done)
    assert re.search(r"<dt>Not redrivable</dt><dd>0 ", done)
    assert "Too late" not in done
    for m in failed:
        s = state(h, m)
        assert (s.status, s.generation, s.attempt) == (Status.READY, 1, 1)
    assert state(h, ready).generation == 0


@pytest.mark.parametrize(
    ("form", "field", "shown"),
    [
        ({"send_at_from": "yesterday"}, "send_at_from", "sendAtFrom 'yesterday' is not an RFC"),
        (
            {"send_at_from": "2026-01-02T00:00:00Z", "send_at_to": "2026-01-01T00:00:00Z"},
            "send_at_to",
            "sendAtTo must be later than sendAtFrom",
        ),
        ({"action": "delete"}, "action", "Choose what to do."),
        ({"cursor": "forged"}, "cursor", "Where to continue from was not recognised"),
    ],
)
def test_a_bad_bulk_filter_is_shown_with_what_was_typed(
    h: Harness, alice: Browser, form: dict[str, str], field: str, shown: str
) -> None:
    message_id = schedule(h, T0 + HOUR)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    r = alice.post(
        f"/apps/{h.alice.app_id}/messages/bulk", {"action": "abort", **form, "confirmed": "yes"}
    )
    assert r.status_code == 400
    said = html.unescape(r.text)
    assert shown in said and f'id="bulk_{field}-error"' in r.text
    assert '<details class="bulk" id="bulk" open>' in r.text
    for name, value in form.items():
        if name in ("send_at_from", "send_at_to"):
            assert typed_value(r.text, f"bulk_{name}") == value
    assert message_id in r.text  # the messages are listed still
    assert state(h, message_id).status is Status.READY and h.published_commands() == []


def test_a_submission_makes_a_bounded_number_of_calls_then_offers_to_continue(
    h: Harness, alice: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "PAGE", 2)
    monkeypatch.setattr(bulk, "SCAN_MAX", 2)  # a call reads 2 messages
    monkeypatch.setattr(routes_messages, "BULK_MAX_CALLS", 3)
    ids = [schedule(h, T0 + HOUR + k) for k in range(7)]
    for _ in ids:
        h.clock.advance(1)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    done = bulk_post(alice, h, {"action": "abort", "confirmed": "yes"})
    assert re.search(r"<dt>Aborted</dt><dd>6</dd>", done)
    assert re.search(r"<dt>Messages read</dt><dd>6 <span class=\"hint\">\(in 3 slices\)", done)
    assert "More may match" in done and "Continue" in done
    cursor = re.search(r'name="cursor" value="([^"]+)"', done)
    assert cursor
    assert sum(state(h, m).status is Status.ABORTED for m in ids) == 6
    # "Continue" posts the same filter, confirmed, with the cursor.
    more = bulk_post(
        alice, h, {"action": "abort", "cursor": html.unescape(cursor.group(1)), "confirmed": "yes"}
    )
    assert re.search(r"<dt>Aborted</dt><dd>1</dd>", more)
    assert "Done: every message of the application was read." in more
    assert all(state(h, m).status is Status.ABORTED for m in ids)


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


def test_a_submission_starts_no_call_after_its_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk, "PAGE", 2)
    clock = ManualClock(T0)
    h = Harness(
        settings=IngestSettings(usage_flush_ms=0, console_cookie_secure=False),
        clock=clock,
        messages=SlowListing(clock),
    )
    try:
        ids = [schedule(h, T0 + HOUR + k) for k in range(20)]
        b = Browser(h)
        b.sign_in(h.alice.control["Authorization"].removeprefix("Token "))
        b.get(f"/apps/{h.alice.app_id}/messages")
        done = bulk_post(b, h, {"action": "abort", "confirmed": "yes"})
        # A call reads pages until 10 s are spent (at 0, 4 and 8 s); the second starts at 12 s,
        # and ends at 24 s: none starts after 20 s.
        assert re.search(r"<dt>Aborted</dt><dd>12</dd>", done)
        assert "(in 2 slices)" in done and "More may match" in done
        assert sum(state(h, m).status is Status.ABORTED for m in ids) == 12
    finally:
        h.close()


def test_bulk_stops_when_kafka_refuses_and_the_cursor_repeats(h: Harness, alice: Browser) -> None:
    ids = [schedule(h, T0 + HOUR + k) for k in range(3)]
    for m in ids:
        set_status(h, m, Status.FAILED)
    h.clock.advance(1)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    h.fake.fail_with = PublishError("kafka_error", "down")
    done = bulk_post(alice, h, {"action": "redrive", "confirmed": "yes"})
    assert re.search(r"<dt>Failed</dt><dd>3 ", done)
    assert "(in 1 slice)" in done and "wait a moment, then continue" in done
    cursor = re.search(r'name="cursor" value="([^"]+)"', done)
    assert cursor
    h.fake.fail_with = None
    more = bulk_post(
        alice,
        h,
        {"action": "redrive", "cursor": html.unescape(cursor.group(1)), "confirmed": "yes"},
    )
    assert re.search(r"<dt>Redriven</dt><dd>3</dd>", more)
    assert all(state(h, m).status is Status.READY for m in ids)


# -- another owner's, CSRF --------------------------------------------------------------------


def test_another_owners_app_is_not_found_and_nothing_changes(h: Harness, alice: Browser) -> None:
    r = h.schedule({"payload": "p", "sendAt": T0 + HOUR}, h.bob)
    bobs = str(r.json()["messageId"])
    alice.get("/apps")
    for app in (h.bob.app_id, h.alice.app_id):
        path = f"/apps/{app}/messages/{bobs}/reschedule"
        assert alice.post(path, {"send_at": "2026-01-01T05:00:00Z"}).status_code == 404, path
    for extra in ({}, {"confirmed": "yes"}):
        r = alice.post(f"/apps/{h.bob.app_id}/messages/bulk", {"action": "abort", **extra})
        assert r.status_code == 404 and "No such page." in r.text
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
    r = alice.post(
        f"/apps/{h.alice.app_id}/messages/bulk", {"action": "abort", "confirmed": "yes"}, csrf=False
    )
    assert r.status_code == 403
    alice.csrf = "forged"
    r = alice.post(f"/apps/{h.alice.app_id}/messages/bulk", {"action": "abort", "confirmed": "yes"})
    assert r.status_code == 403
    s = state(h, message_id)
    assert (s.status, s.generation) == (Status.READY, 0) and h.published_commands() == []
