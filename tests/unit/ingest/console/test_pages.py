"""Each console page with the ingest app's fakes: applications, keys, messages, usage."""

from __future__ import annotations

import html

import pytest

from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler_ingest.destinations import FakeTopicDirectory
from tests.unit.ingest.console.browser import Browser, secret_in
from tests.unit.ingest.harness import T0, Harness, basic, token

pytestmark = pytest.mark.unit

ONE = {"payload": 1, "sendAt": T0 + 60_000}

APP = {
    "name": "orders",
    "type": "REST",
    "endpoint": "https://example.com/hook",
    "description": "order reminders",
    "auth_header_name": "X-Api-Key",
    "auth_header_value": "hunter2-header-value",
    "send_back_format": "unwrap_json",
}


def register(b: Browser, **changes: str) -> str:
    r = b.post("/apps/new", {**APP, **changes})
    assert r.status_code == 200, r.text
    assert "Application registered" in r.text
    app_id = r.text.split('href="/console/apps/')[1].split('"')[0]
    return app_id


def schedule(h: Harness, send_at_ms: int, payload: object = "p") -> str:
    r = h.schedule({"payload": payload, "sendAt": send_at_ms})
    assert r.status_code == 200, r.text
    return str(r.json()["messageId"])


def set_status(h: Harness, message_id: str, status: Status, attempt: int = 1) -> None:
    view = h.messages.get(h.alice.app_id, message_id)
    assert view is not None
    h.messages.update_status(
        h.alice.app_id,
        message_id,
        StatusUpdate(status, 0, attempt, view.state.due_ms, h.clock.now_ms(), http_status=500),
        LogEntry(h.clock.now_ms(), f"0:{attempt}:{status.value}", status, {"httpStatus": 500}),
    )


# -- applications ------------------------------------------------------------------------------


def test_the_list_shows_the_owners_apps_only(h: Harness, alice: Browser) -> None:
    page = alice.get("/apps").text
    assert h.alice.app_id in page and "alice@example.com&#39;s app" in page
    assert h.bob.app_id not in page


def test_register_shows_the_signing_secret_once(h: Harness, alice: Browser) -> None:
    r = alice.post("/apps/new", APP)
    signing = secret_in(r.text)
    assert signing.startswith("whsec_")
    assert r.headers["cache-control"] == "no-store"
    app_id = r.text.split('href="/console/apps/')[1].split('"')[0]
    app = h.apps.get_app(app_id)
    assert app is not None and app.owner_id == h.alice.owner
    assert (app.name, app.endpoint, app.send_back_format) == (
        "orders",
        APP["endpoint"],
        "unwrap_json",
    )
    assert (app.auth_header_name, app.auth_header_value) == ("X-Api-Key", "hunter2-header-value")
    detail = alice.get(f"/apps/{app_id}").text
    for page in (detail, alice.get(f"/apps/{app_id}/edit").text, alice.get("/apps").text):
        assert signing not in page
        assert "hunter2-header-value" not in page  # the header value is never rendered
    assert "X-Api-Key" in detail


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": ""}, "name", "Enter a name"),
        ({"type": "SMTP"}, "type", "Choose REST or KAFKA."),
        ({"endpoint": ""}, "endpoint", "Enter the endpoint"),
        ({"endpoint": "ftp://example.com/x"}, "endpoint", "absolute http(s) URL"),
        ({"type": "KAFKA", "endpoint": "orders"}, "endpoint", "outside the prefixes"),
        ({"auth_header_name": "Bad Header"}, "auth_header_name", "A header name is"),
        ({"auth_header_value": ""}, "auth_header_value", "Enter the header value"),
        ({"send_back_format": "xml"}, "send_back_format", "Choose a body format."),
    ],
)
def test_register_validation_messages(
    h: Harness, alice: Browser, changes: dict[str, str], field: str, message: str
) -> None:
    r = alice.post("/apps/new", {**APP, **changes})
    assert r.status_code == 400
    assert message in html.unescape(r.text)
    assert f'id="{field}-error"' in r.text and 'role="alert"' in r.text
    assert "hunter2-header-value" not in r.text  # not echoed back either
    assert [a.app_id for a in h.apps.apps(h.alice.owner)] == [h.alice.app_id]


def test_edit_keeps_the_header_value_when_left_blank(h: Harness, alice: Browser) -> None:
    app_id = register(alice)
    alice.get(f"/apps/{app_id}/edit")
    form = {**APP, "name": "orders v2", "endpoint": "https://example.com/v2", "description": ""}
    form["auth_header_value"] = ""
    r = alice.post(f"/apps/{app_id}/edit", form)
    assert r.url.path == f"/console/apps/{app_id}" and "Application saved." in r.text
    app = h.apps.get_app(app_id)
    assert app is not None
    assert (app.name, app.endpoint, app.description) == ("orders v2", form["endpoint"], None)
    assert app.auth_header_value == "hunter2-header-value"
    assert app.type == "REST"


def test_edit_can_remove_the_header(h: Harness, alice: Browser) -> None:
    app_id = register(alice)
    alice.get(f"/apps/{app_id}/edit")
    r = alice.post(f"/apps/{app_id}/edit", {**APP, "auth_header_value": "", "remove_auth": "on"})
    assert r.status_code == 200
    app = h.apps.get_app(app_id)
    assert app is not None and (app.auth_header_name, app.auth_header_value) == (None, None)


def test_edit_validates_like_register(h: Harness, alice: Browser) -> None:
    r = alice.post(f"/apps/{h.alice.app_id}/edit", {**APP, "endpoint": "not a url"})
    assert r.status_code == 400 and "absolute http(s) URL" in r.text
    assert h.apps.get_app(h.alice.app_id).endpoint == "https://example.com/hook"  # type: ignore[union-attr]


def test_delete_needs_the_name_typed(h: Harness, alice: Browser) -> None:
    r = alice.post(f"/apps/{h.alice.app_id}/delete", {"confirm": "nope"})
    assert "Not deleted" in r.text
    assert h.apps.get_app(h.alice.app_id).deleted_ms is None  # type: ignore[union-attr]
    r = alice.post(f"/apps/{h.alice.app_id}/delete", {"confirm": "alice@example.com's app"})
    assert r.url.path == "/console/apps" and "deleted" in r.text
    # What became of its messages (the record writer's lazy purge), said plainly.
    said = html.unescape(r.text)
    assert "pending messages (READY or QUEUED) will not be delivered" in said
    assert "ends ABORTED with the reason \u201capplication deleted\u201d" in said
    assert h.apps.get_app(h.alice.app_id).deleted_ms == T0  # type: ignore[union-attr]
    assert h.schedule({"payload": 1, "sendAt": T0 + 60_000}).status_code == 401


def test_quick_start_names_the_app(h: Harness, alice: Browser) -> None:
    page = html.unescape(alice.get(f"/apps/{h.alice.app_id}").text)
    assert f"-u '{h.alice.app_id}:DATA_KEY_SECRET'" in page
    # Sent two minutes after the page was shown (T0 is 2026-01-01T00:00:00Z), not in 2030.
    assert '"sendAt": "2026-01-01T00:02:00Z"' in page and "2030" not in page
    assert '"2026-01-01T00:02:00Z")' in page  # the producer helper's sendAt
    assert "curl -X POST http://testserver/messages" in page
    assert f'producer.schedule("{h.alice.app_id}"' in page
    assert "SchedulerProducer" in page and "httpx.post" in page


# -- keys --------------------------------------------------------------------------------------


def test_a_data_key_is_shown_once_and_works(h: Harness, alice: Browser) -> None:
    r = alice.post(f"/apps/{h.alice.app_id}/data-keys")
    secret = secret_in(r.text)
    assert 'data-copy="secret"' in r.text  # the copy button
    new_ids = {k.key_id for k in h.apps.data_keys(h.alice.app_id)} - {h.alice.data_key_id}
    (key_id,) = new_ids
    page = alice.get(f"/apps/{h.alice.app_id}").text
    assert key_id in page and secret not in page
    ok = h.client.post(
        "/messages",
        json={"payload": 1, "sendAt": T0 + 60_000},
        headers=basic(h.alice.app_id, secret),
    )
    assert ok.status_code == 200
    # First a confirmation step (nothing changes), then the confirmed post.
    asked = alice.post(f"/apps/{h.alice.app_id}/data-keys/{key_id}/deactivate")
    assert asked.status_code == 200 and f"Deactivate data key {key_id}?" in asked.text
    assert 'name="confirmed" value="yes"' in asked.text
    assert all(k.active for k in h.apps.data_keys(h.alice.app_id))
    alice.post(f"/apps/{h.alice.app_id}/data-keys/{key_id}/deactivate", {"confirmed": "yes"})
    assert "deactivated" in alice.get(f"/apps/{h.alice.app_id}").text
    refused = h.client.post(
        "/messages",
        json={"payload": 1, "sendAt": T0 + 60_000},
        headers=basic(h.alice.app_id, secret),
    )
    assert refused.status_code == 401


def test_control_keys_create_list_deactivate(h: Harness, alice: Browser) -> None:
    page = alice.get("/control-keys").text
    assert h.alice.control_key_id in page and "this session" in page
    r = alice.post("/control-keys")
    secret = secret_in(r.text)
    assert h.client.get("/control-keys", headers=token(secret)).status_code == 200
    new_id = next(
        k.key_id for k in h.apps.control_keys(h.alice.owner) if k.key_id != h.alice.control_key_id
    )
    listed = alice.get("/control-keys").text
    assert new_id in listed and secret not in listed
    asked = alice.post(f"/control-keys/{new_id}/deactivate")
    assert f"Deactivate control key {new_id}?" in asked.text and "signed out" not in asked.text
    assert h.client.get("/control-keys", headers=token(secret)).status_code == 200
    r = alice.post(f"/control-keys/{new_id}/deactivate", {"confirmed": "yes"})
    assert r.url.path == "/console/control-keys" and "deactivated" in r.text
    assert h.client.get("/control-keys", headers=token(secret)).status_code == 401


def test_the_last_active_control_key_is_not_deactivated(h: Harness, alice: Browser) -> None:
    page = alice.get("/control-keys").text
    assert "last active key" in page
    assert f"/control-keys/{h.alice.control_key_id}/deactivate" not in page  # no button
    for form in ({}, {"confirmed": "yes"}):
        r = alice.post(f"/control-keys/{h.alice.control_key_id}/deactivate", form)
        assert r.url.path == "/console/control-keys"
        assert "is your last active control key" in html.unescape(r.text)
        assert "Create another control key first." in r.text
    assert all(k.active for k in h.apps.control_keys(h.alice.owner))
    assert alice.get("/apps").url.path == "/console/apps"  # still signed in


def test_deactivating_the_sessions_own_key_signs_out_and_says_so(
    h: Harness, alice: Browser
) -> None:
    alice.post("/control-keys")  # another key: the session's is no longer the last one
    page = alice.get("/control-keys").text
    assert "(signs you out)" in page
    asked = alice.post(f"/control-keys/{h.alice.control_key_id}/deactivate")
    assert "you will be signed out" in asked.text
    r = alice.post(f"/control-keys/{h.alice.control_key_id}/deactivate", {"confirmed": "yes"})
    assert r.url.path == "/console/sign-in"
    assert "the control key of that session was deactivated" in r.text
    assert alice.get("/apps").url.path == "/console/sign-in"


# -- messages ----------------------------------------------------------------------------------


def test_messages_newest_first_filtered_and_paged(h: Harness, alice: Browser) -> None:
    ids = []
    for _ in range(27):
        ids.append(schedule(h, T0 + 600_000))
        h.clock.advance(1)
    set_status(h, ids[0], Status.FAILED)
    page = alice.get(f"/apps/{h.alice.app_id}/messages").text
    shown = [i for i in ids if i in page]
    assert len(shown) == 25 and ids[-1] in page and ids[0] not in page
    assert page.index(ids[-1]) < page.index(ids[-2])  # newest first
    older = page.split('href="/console/apps/')[-1]
    assert "Older messages" in page
    link = html.unescape(page.split('<a href="')[-1].split('"')[0])
    assert "cursor=" in link, older
    second = alice.client.get(link).text
    assert ids[0] in second and ids[1] in second and ids[-1] not in second
    failed = alice.get(f"/apps/{h.alice.app_id}/messages?status=FAILED").text
    assert ids[0] in failed and ids[1] not in failed
    assert "Redrive" in failed


def test_message_detail_with_its_logs(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000, {"order": 42})
    page = html.unescape(alice.get(f"/apps/{h.alice.app_id}/messages/{message_id}").text)
    assert '{"order":42}' in page.replace(" ", "")
    assert "2026-01-01T00:10:00.000Z" in page and "READY" in page
    assert "source=http" in page  # the "scheduled" log entry


def test_abort_from_the_list(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    back = f"/apps/{h.alice.app_id}/messages"
    asked = alice.post(f"/apps/{h.alice.app_id}/messages/{message_id}/abort", {"back": back})
    assert asked.status_code == 200 and f"Abort message {message_id}?" in asked.text
    assert "It will not be delivered" in asked.text and f'href="/console{back}"' in asked.text
    assert h.messages.get(h.alice.app_id, message_id).state.status is Status.READY  # type: ignore[union-attr]
    assert h.published_commands() == []
    r = alice.post(
        f"/apps/{h.alice.app_id}/messages/{message_id}/abort", {"back": back, "confirmed": "yes"}
    )
    assert r.url.path == f"/console/apps/{h.alice.app_id}/messages"
    assert f"Message {message_id} aborted." in r.text
    assert h.messages.get(h.alice.app_id, message_id).state.status is Status.ABORTED  # type: ignore[union-attr]
    assert [c.message_id for c in h.published_commands()] == [message_id]


def test_the_log_says_who_aborted(h: Harness, alice: Browser) -> None:
    by_console, by_api = schedule(h, T0 + 600_000), schedule(h, T0 + 600_000)
    alice.get(f"/apps/{h.alice.app_id}/messages")
    alice.post(f"/apps/{h.alice.app_id}/messages/{by_console}/abort", {"confirmed": "yes"})
    assert h.client.put(f"/messages/{by_api}/abort", headers=h.alice.data).status_code == 200

    def aborted_by(message_id: str) -> object:
        (entry,) = [
            e for e in h.messages.logs(h.alice.app_id, message_id) if e.status is Status.ABORTED
        ]
        return entry.data["by"]

    assert (aborted_by(by_console), aborted_by(by_api)) == ("console", "api")
    page = alice.get(f"/apps/{h.alice.app_id}/messages/{by_console}").text
    assert "by=console" in page


def test_abort_of_a_sent_message_says_why_not(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    set_status(h, message_id, Status.SENT)
    r = alice.post(f"/apps/{h.alice.app_id}/messages/{message_id}/abort", {"confirmed": "yes"})
    assert "Not done: the message is SENT" in r.text
    assert h.published_commands() == []


def test_redrive_a_failed_message(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    set_status(h, message_id, Status.FAILED, attempt=5)
    detail = f"/apps/{h.alice.app_id}/messages/{message_id}"
    alice.get(detail)
    r = alice.post(f"{detail}/redrive", {"back": detail})
    assert r.url.path == "/console" + detail and "redriven" in r.text
    state = h.messages.get(h.alice.app_id, message_id).state  # type: ignore[union-attr]
    assert (state.status, state.generation, state.attempt) == (Status.READY, 1, 1)


def test_a_back_link_cannot_leave_the_app(h: Harness, alice: Browser) -> None:
    message_id = schedule(h, T0 + 600_000)
    r = alice.post(
        f"/apps/{h.alice.app_id}/messages/{message_id}/abort",
        {"back": "https://evil.example/", "confirmed": "yes"},
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/console/apps/{h.alice.app_id}/messages"


def test_rotate_the_signing_secret(h: Harness, alice: Browser) -> None:
    detail = alice.get(f"/apps/{h.alice.app_id}").text
    assert "Rotate the signing secret" in detail and "docs/WEBHOOKS.md" in detail
    asked = alice.post(f"/apps/{h.alice.app_id}/signing-secret/rotate")
    assert asked.status_code == 200 and "Rotate the signing secret of" in asked.text
    assert h.apps.get_app(h.alice.app_id).signing_secret == "whsec_seed"  # type: ignore[union-attr]
    r = alice.post(f"/apps/{h.alice.app_id}/signing-secret/rotate", {"confirmed": "yes"})
    assert r.status_code == 200 and "Signing secret rotated" in r.text
    new = secret_in(r.text)
    app = h.apps.get_app(h.alice.app_id)
    assert app is not None and new == app.signing_secret and new.startswith("whsec_")
    assert app.previous_signing_secret == "whsec_seed"
    until = T0 + h.settings.signing_secret_grace_ms
    assert app.previous_secret_valid_until_ms == until
    assert '<time datetime="2026-01-02T00:00:00.000Z"' in r.text  # the grace period's end
    assert "docs/WEBHOOKS.md" in r.text and "Rotating the signing secret" in html.unescape(r.text)
    assert new not in alice.get(f"/apps/{h.alice.app_id}").text  # shown once


def test_confirmation_steps_are_404_for_another_owners_app(h: Harness, alice: Browser) -> None:
    alice.get("/apps")
    for path in (
        f"/apps/{h.bob.app_id}/signing-secret/rotate",
        f"/apps/{h.bob.app_id}/data-keys/{h.bob.data_key_id}/deactivate",
    ):
        assert alice.post(path).status_code == 404, path


# -- usage -------------------------------------------------------------------------------------


def test_usage_chart_and_table(h: Harness, alice: Browser) -> None:
    for _ in range(3):
        schedule(h, T0 + 600_000)
    page = alice.get(f"/apps/{h.alice.app_id}/usage").text
    assert "<svg" in page and 'class="bar ingested"' in page
    assert "<title>2026-01-01: 3 ingested</title>" in page
    assert '<td class="nowrap">2026-01-01</td><td>3</td><td>0</td><td>0</td>' in page.replace(
        "\n", ""
    )
    # The whole period, and the last 14 days for phones (the stylesheet shows one of them).
    assert 'class="chart chart-wide"' in page and 'class="chart chart-narrow"' in page
    assert "messages per day, last 14 days;" in page


def test_usage_without_messages_says_so(h: Harness, alice: Browser) -> None:
    page = alice.get(f"/apps/{h.alice.app_id}/usage").text
    assert "No messages in this period yet." in page and 'class="bar' not in page


def test_register_a_kafka_app_within_the_allowed_prefixes() -> None:
    from scheduler_ingest.settings import IngestSettings

    h = Harness(
        settings=IngestSettings(
            usage_flush_ms=0, console_cookie_secure=False, kafka_endpoint_prefixes=["customer."]
        ),
        destinations=FakeTopicDirectory(["customer.reminders"]),
    )
    try:
        b = Browser(h)
        b.sign_in(h.alice.control["Authorization"].removeprefix("Token "))
        app_id = register(
            b,
            type="KAFKA",
            endpoint="customer.reminders",
            auth_header_name="",
            auth_header_value="",
        )
        app = h.apps.get_app(app_id)
        assert app is not None and (app.type, app.endpoint) == ("KAFKA", "customer.reminders")
        r = b.post("/apps/new", {**APP, "type": "KAFKA", "endpoint": "unit.requests"})
        assert r.status_code == 400 and "system&#39;s own topics" in r.text
        r = b.post("/apps/new", {**APP, "type": "KAFKA", "endpoint": "customer.missing"})
        assert r.status_code == 400 and "does not exist: create it first" in r.text
    finally:
        h.close()
