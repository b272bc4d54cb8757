"""The console in a real headless chromium, on the real stack: the user's whole flow, a wrong
key, another owner's app by URL. Writes the screenshots of docs/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from scheduler.domain.status import Status
from scheduler.records import CommandKind
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler.store.usage import UsageKind, usage_day
from scheduler_ingest.console.chart import day_date
from tests.browser.conftest import Served
from tests.integration.ingest.conftest import read_topic
from tests.unit.ingest.harness import COMMANDS

pytestmark = [pytest.mark.e2e, pytest.mark.tools]

HOUR_MS = 3_600_000


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Token ")


def sign_in(page: Page, key: str) -> None:
    page.goto("/console/")
    page.get_by_label("Control key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def shot(page: Page, screenshots: Path, name: str, *, mask_secret: bool = False) -> None:
    # A secret on the page is masked: even a test key does not belong in the docs.
    mask = [page.locator("#secret")] if mask_secret else []
    page.screenshot(
        path=str(screenshots / f"{name}.png"), full_page=True, mask=mask, mask_color="#d0d7de"
    )


def test_a_wrong_key_is_refused(browser: BrowserContext, served: Served) -> None:
    page = browser.new_page()
    sign_in(page, "definitely-not-a-key")
    expect(page.get_by_role("alert")).to_have_text("This control key was refused.")
    page.goto("/console/apps")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    assert browser.cookies() == []


def test_keyboard_only_sign_in_and_navigation(browser: BrowserContext, served: Served) -> None:
    page = browser.new_page()
    page.goto("/console/sign-in")
    # The key field has the focus on arrival (wait for it: keys typed before the page has
    # focused it would be lost); Enter submits.
    expect(page.get_by_label("Control key")).to_be_focused()
    page.keyboard.type(key_of(served.h.alice.control))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Applications")).to_be_visible()
    # The first Tab reaches the skip link, which jumps to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    # Tab on to the "Register an application" link and follow it with Enter.
    link = page.get_by_role("link", name="Register an application")
    for _ in range(10):
        page.keyboard.press("Tab")
        if link.evaluate("el => el === document.activeElement"):
            break
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Register an application")).to_be_visible()


def test_another_owners_app_is_not_reachable(browser: BrowserContext, served: Served) -> None:
    h = served.h
    page = browser.new_page()
    sign_in(page, key_of(h.alice.control))
    expect(page.get_by_role("heading", name="Applications")).to_be_visible()
    for path in (f"/console/apps/{h.bob.app_id}", f"/console/apps/{h.bob.app_id}/messages"):
        response = page.goto(path)
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert h.bob.app_id not in page.content()


def test_the_whole_flow(browser: BrowserContext, served: Served, screenshots: Path) -> None:
    h = served.h
    page = browser.new_page()
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    shot(page, screenshots, "sign-in")

    # Sign in: only a session id in an HttpOnly, SameSite=Strict cookie, never the key.
    key = key_of(h.alice.control)
    sign_in(page, key)
    expect(page.get_by_role("heading", name="Applications")).to_be_visible()
    (cookie,) = browser.cookies()
    assert cookie["name"] == "scheduler_console" and cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict" and cookie["secure"]
    assert key not in cookie["value"]
    assert key not in page.url

    # Register an application: first with a mistake, then right.
    page.get_by_role("link", name="Register an application").click()
    page.get_by_label("Name", exact=True).fill("Reminders")
    page.get_by_label("Endpoint", exact=True).fill("ftp://example.com/hook")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_contain_text("Please correct 1 field")
    expect(page.locator("#endpoint-error")).to_contain_text("absolute http(s) URL")
    shot(page, screenshots, "register-validation")
    page.get_by_label("Endpoint", exact=True).fill("https://example.com/hooks/reminders")
    page.get_by_label("Description").fill("Appointment reminders")
    page.get_by_label("Header name").fill("X-Api-Key")
    page.get_by_label("Header value").fill("browser-header-value")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", name="Application registered")).to_be_visible()
    signing = page.locator("#secret").input_value()
    assert signing.startswith("whsec_")
    page.get_by_role("link", name="Continue to the application").click()
    expect(page.get_by_role("heading", name="Reminders")).to_be_visible()
    app_id = page.url.rsplit("/", 1)[1]
    assert signing not in page.content() and "browser-header-value" not in page.content()

    # A data key: shown once, with a copy button that works.
    page.get_by_role("button", name="Create a data key").click()
    expect(page.get_by_role("heading", name="Data key created")).to_be_visible()
    secret = page.locator("#secret").input_value()
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#secret-copied")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, screenshots, "data-key-created", mask_secret=True)
    page.get_by_role("link", name="Done").click()
    assert secret not in page.content()
    shot(page, screenshots, "application")

    # Schedule two messages through the API with that key.
    now = h.clock.now_ms()
    ids = []
    for n in range(2):
        r = httpx.post(
            f"{served.base}/messages",
            json={"payload": {"reminder": n}, "sendAt": now + HOUR_MS + n},
            auth=(app_id, secret),
            timeout=15,
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["messageId"])
    to_abort, to_fail = ids

    # See them in the list, newest first; abort one.
    page.get_by_role("link", name="Messages").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(to_fail)
    expect(rows.nth(1)).to_contain_text(to_abort)
    page.get_by_role("button", name=f"Abort message {to_abort}").click()
    # An inline confirmation first (nothing is posted until "Yes, abort").
    expect(page.get_by_role("alertdialog")).to_contain_text(f"Abort message {to_abort}?")
    page.get_by_role("button", name="Yes, abort").click()
    expect(page.get_by_role("status")).to_have_text(f"Message {to_abort} aborted.")
    expect(rows.nth(1)).to_contain_text("ABORTED")
    view = h.messages.get(app_id, to_abort)
    assert view is not None and view.state.status is Status.ABORTED

    # Make the other one FAILED (as the dispatcher would after its last attempt), redrive it.
    state = h.messages.get(app_id, to_fail)
    assert state is not None
    at = h.clock.now_ms()
    h.messages.update_status(
        app_id,
        to_fail,
        StatusUpdate(Status.FAILED, 0, 3, state.state.due_ms, at, http_status=500, error="500"),
        LogEntry(at, "0:3:failed", Status.FAILED, {"httpStatus": 500, "attempt": 3}),
    )
    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text(to_fail)
    shot(page, screenshots, "messages")
    page.get_by_role("link", name=to_fail, exact=True).click()
    expect(page.get_by_role("heading", name=f"Message {to_fail}")).to_be_visible()
    page.get_by_role("button", name=f"Redrive message {to_fail}").click()
    expect(page.get_by_role("status")).to_contain_text("redriven")
    expect(page.locator(".facts")).to_contain_text("READY")
    view = h.messages.get(app_id, to_fail)
    assert view is not None
    assert (view.state.status, view.state.generation, view.state.attempt) == (Status.READY, 1, 1)
    shot(page, screenshots, "message")
    commands = [COMMANDS.decode(r.value) for r in read_topic(h.kafka, h.topics.commands)]
    mine = [(c.message_id, c.kind) for c in commands if c.app_id == app_id]
    assert mine == [(to_abort, CommandKind.ABORT), (to_fail, CommandKind.REDRIVE)]

    # Usage: the two messages ingested today, and earlier days' counts as the delivery side
    # would have written them.
    today = usage_day(h.clock.now_ms())
    for back, (ingested, sent, failed) in enumerate([(30, 31, 1), (55, 50, 4), (40, 38, 2)], 1):
        h.usage.add(app_id, today - back, UsageKind.INGESTED, ingested)
        h.usage.add(app_id, today - back, UsageKind.SENT, sent)
        h.usage.add(app_id, today - back, UsageKind.FAILED, failed)
    page.goto(f"/console/apps/{app_id}/usage")
    wide = page.locator("figure.chart-wide svg")  # the whole period (phones: the last days)
    expect(wide.locator("rect.bar.ingested")).to_have_count(4)
    expect(wide.locator("rect.bar.failed")).to_have_count(3)
    first_row = page.locator("tbody tr").first.locator("td")
    expect(first_row).to_have_text([day_date(today), "2", "0", "0"])
    shot(page, screenshots, "usage")

    page.get_by_role("link", name="Control keys").click()
    expect(page.locator("tbody")).to_contain_text(h.alice.control_key_id)
    shot(page, screenshots, "control-keys")
    page.get_by_role("link", name="Applications").click()
    expect(page.get_by_role("link", name="Reminders")).to_be_visible()
    shot(page, screenshots, "applications")

    # Sign out: the session is gone, pages send back to sign-in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    assert browser.cookies() == []
    page.goto(f"/console/apps/{app_id}")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
