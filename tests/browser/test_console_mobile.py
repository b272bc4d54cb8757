"""The console on a phone (360 and 390 px wide) and its confirmation steps, in a real headless
chromium, on the in-memory fakes (no Kafka or Cassandra): no page is wider than the screen,
"Sign out" is visible at every width, and irreversible actions ask first."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect

from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, StatusUpdate
from scheduler.store.usage import UsageKind, usage_day
from tests.browser.conftest import Faked, new_context
from tests.unit.ingest.harness import T0, Tenant, seed_owner

pytestmark = [pytest.mark.tools]

HOUR_MS = 3_600_000
LONG_NAME = "Appointment reminders for the north-east clinics"
LONG_ENDPOINT = "https://hooks.example.com/scheduler/deliveries/appointment-reminders/v2"


# The elements whose right edge is past the viewport (for the failure message).
TOO_WIDE = """Array.from(document.querySelectorAll("body *"))
  .filter(el => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 8)
  .map(el => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)"""


def key_of(t: Tenant) -> str:
    return t.control["Authorization"].removeprefix("Token ")


@pytest.fixture(scope="module")
def seeded(served_fakes: Faked) -> dict[str, str]:
    """Carol: a long-named app with messages in every state, usage over a month, two control
    keys; Dave: a single control key (the last-key guard)."""
    h = served_fakes.h
    carol = seed_owner(h.apps, "carol.longname@example-company.com", "app_carol_0123456789", T0)
    app = h.apps.get_app(carol.app_id)
    assert app is not None
    h.apps.put_app(dataclasses.replace(app, name=LONG_NAME, endpoint=LONG_ENDPOINT))
    ids = []
    for n in range(4):
        r = httpx.post(
            f"{served_fakes.base}/messages",
            json={
                "payload": {"reminder": n, "text": "x" * 120},
                "sendAt": T0 + HOUR_MS + n,
                "idempotencyKey": f"reminder-{n}-" + "k" * 60,
            },
            headers=carol.data,
            timeout=15,
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["messageId"])
    state = h.messages.get(carol.app_id, ids[0])
    assert state is not None
    h.messages.update_status(
        carol.app_id,
        ids[0],
        StatusUpdate(Status.FAILED, 0, 3, state.state.due_ms, T0, http_status=500, error="500"),
        LogEntry(T0, "0:3:failed", Status.FAILED, {"httpStatus": 500, "attempt": 3}),
    )
    today = usage_day(T0)
    for back in range(1, 30):
        h.usage.add(carol.app_id, today - back, UsageKind.INGESTED, 1000 + 37 * back)
        h.usage.add(carol.app_id, today - back, UsageKind.SENT, 990 + 30 * back)
        h.usage.add(carol.app_id, today - back, UsageKind.FAILED, back % 5)
    second = httpx.post(f"{served_fakes.base}/control-keys", headers=carol.control, timeout=15)
    assert second.status_code == 200
    dave = seed_owner(h.apps, "dave@example.com", "app_dave", T0)
    return {
        "carol": key_of(carol),
        "carol_key_id": carol.control_key_id,
        "carol_second": second.json()["secret"],
        "app": carol.app_id,
        "failed": ids[0],
        "ready": ids[1],
        "data": carol.data["Authorization"],
        "dave": key_of(dave),
        "dave_key_id": dave.control_key_id,
    }


def context(playwright: Playwright, served_fakes: Faked, width: int) -> Iterator[BrowserContext]:
    with tempfile.TemporaryDirectory(prefix="console-mobile-") as profile:
        ctx = new_context(playwright, profile, served_fakes.base, width)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture(params=[360, 390], ids=lambda w: f"{w}px")
def phone(
    request: pytest.FixtureRequest, playwright: Playwright, served_fakes: Faked
) -> Iterator[BrowserContext]:
    yield from context(playwright, served_fakes, request.param)


@pytest.fixture
def desktop(playwright: Playwright, served_fakes: Faked) -> Iterator[BrowserContext]:
    yield from context(playwright, served_fakes, 1280)


def sign_in(page: Page, key: str) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("Control key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Applications")).to_be_visible()


def fits(page: Page) -> None:
    """Nothing wider than the viewport, and "Sign out" visible inside it."""
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], (
        f"{page.url}: laid out {width[0]} px wide in {width[1]} px; too wide: "
        + str(page.evaluate(TOO_WIDE))
    )
    sign_out = page.get_by_role("button", name="Sign out")
    expect(sign_out).to_be_visible()
    box = sign_out.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= width[1], (page.url, box)
    # Not white on white: the header behind it is the dark bar.
    header = page.locator("header.top").bounding_box()
    assert header is not None
    assert header["y"] <= box["y"] and box["y"] + box["height"] <= header["y"] + header["height"]
    assert header["x"] + header["width"] >= box["x"] + box["width"]


def test_every_page_fits_a_phone(
    phone: BrowserContext, seeded: dict[str, str], screenshots: Path
) -> None:
    page = phone.new_page()
    width = page.viewport_size["width"] if page.viewport_size else 0
    sign_in(page, seeded["carol"])
    app = f"/console/apps/{seeded['app']}"
    pages = {
        "applications": "/console/apps",
        "register": "/console/apps/new",
        "application": app,
        "edit": f"{app}/edit",
        "messages": f"{app}/messages",
        "message": f"{app}/messages/{seeded['failed']}",
        "usage": f"{app}/usage",
        "control-keys": "/console/control-keys",
    }
    for name, path in pages.items():
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        fits(page)
        page.screenshot(path=str(screenshots / f"phone-{width}-{name}.png"), full_page=True)

    # The messages are cards: each id on one or two lines, never one character per line.
    page.goto(f"{app}/messages")
    link = page.get_by_role("link", name=seeded["ready"], exact=True)
    box = link.bounding_box()
    line = float(link.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || 20"))
    assert box is not None and box["height"] <= 2.5 * line, box
    # Phones get the last days' chart, whole and scaled to the width (not clipped).
    page.goto(f"{app}/usage")
    expect(page.locator("figure.chart-wide")).to_be_hidden()
    recent = page.locator("figure.chart-narrow svg")
    expect(recent).to_be_visible()
    chart = recent.bounding_box()
    assert chart is not None and chart["x"] >= 0 and chart["x"] + chart["width"] <= width
    assert chart["height"] >= 120, chart  # big enough to read
    # A confirmation, open inline, still fits.
    page.goto(f"{app}/messages")
    page.get_by_role("button", name=f"Abort message {seeded['ready']}").click()
    expect(page.get_by_role("alertdialog")).to_be_visible()
    fits(page)
    page.screenshot(path=str(screenshots / f"phone-{width}-confirm.png"), full_page=True)
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("alertdialog")).to_have_count(0)


def test_the_desktop_layout_keeps_its_tables(
    desktop: BrowserContext, seeded: dict[str, str], screenshots: Path
) -> None:
    page = desktop.new_page()
    sign_in(page, seeded["carol"])
    page.goto(f"/console/apps/{seeded['app']}/messages")
    fits(page)
    expect(page.locator("thead")).to_be_visible()  # a real table, not cards
    assert page.locator("tbody tr").first.evaluate("el => getComputedStyle(el).display") == (
        "table-row"
    )
    page.screenshot(path=str(screenshots / "desktop-messages.png"), full_page=True)
    page.goto(f"/console/apps/{seeded['app']}/usage")
    fits(page)
    expect(page.locator("figure.chart-narrow")).to_be_hidden()
    wide = page.locator("figure.chart-wide svg").bounding_box()
    assert wide is not None and wide["width"] == 788  # its natural size, as before
    page.screenshot(path=str(screenshots / "desktop-usage.png"), full_page=True)


def test_abort_asks_first(
    phone: BrowserContext, served_fakes: Faked, seeded: dict[str, str]
) -> None:
    h, app = served_fakes.h, seeded["app"]
    r = httpx.post(
        f"{served_fakes.base}/messages",
        json={"payload": "abort me", "sendAt": T0 + 2 * HOUR_MS},
        headers={"Authorization": seeded["data"]},
        timeout=15,
    )
    assert r.status_code == 200, r.text
    to_abort = r.json()["messageId"]
    page = phone.new_page()
    sign_in(page, seeded["carol"])
    page.goto(f"/console/apps/{app}/messages/{to_abort}")
    page.get_by_role("button", name=f"Abort message {to_abort}").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("It will not be delivered")
    expect(page.get_by_role("button", name="Yes, abort")).to_be_focused()
    page.keyboard.press("Escape")  # taken back: nothing changed
    expect(dialog).to_have_count(0)
    view = h.messages.get(app, to_abort)
    assert view is not None and view.state.status is Status.READY
    page.get_by_role("button", name=f"Abort message {to_abort}").click()
    page.get_by_role("button", name="Yes, abort").click()
    expect(page.get_by_role("status")).to_have_text(f"Message {to_abort} aborted.")
    expect(page.locator(".facts")).to_contain_text("ABORTED")
    expect(page.locator("table")).to_contain_text("by=console")


def test_rotate_the_signing_secret(
    phone: BrowserContext, served_fakes: Faked, seeded: dict[str, str], screenshots: Path
) -> None:
    h, app = served_fakes.h, seeded["app"]
    page = phone.new_page()
    sign_in(page, seeded["carol"])
    page.goto(f"/console/apps/{app}")
    before = h.apps.get_app(app)
    assert before is not None
    page.get_by_role("button", name="Rotate the signing secret").click()
    expect(page.get_by_role("alertdialog")).to_contain_text("grace period")
    page.get_by_role("button", name="Yes, rotate").click()
    expect(page.get_by_role("heading", name="Signing secret rotated")).to_be_visible()
    secret = page.locator("#secret").input_value()
    after = h.apps.get_app(app)
    assert after is not None and secret == after.signing_secret != before.signing_secret
    assert after.previous_signing_secret == before.signing_secret
    expect(page.locator("#valid-until")).to_have_text("2026-01-02T00:00:00.000Z")
    expect(page.get_by_text("docs/WEBHOOKS.md")).to_be_visible()
    fits(page)
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.screenshot(
        path=str(screenshots / f"phone-{width}-rotated.png"),
        full_page=True,
        mask=[page.locator("#secret")],
        mask_color="#d0d7de",
    )


def test_the_last_control_key_is_guarded(
    phone: BrowserContext, served_fakes: Faked, seeded: dict[str, str]
) -> None:
    page = phone.new_page()
    sign_in(page, seeded["dave"])
    page.goto("/console/control-keys")
    row = page.locator("tbody tr", has_text=seeded["dave_key_id"])
    expect(row).to_contain_text("last active key")
    expect(row.get_by_role("button")).to_have_count(0)
    fits(page)


def test_deactivating_the_sessions_own_key_says_it_signs_out(
    desktop: BrowserContext, served_fakes: Faked, seeded: dict[str, str]
) -> None:
    page = desktop.new_page()
    sign_in(page, seeded["carol_second"])  # the key this test deactivates; carol keeps hers
    page.goto("/console/control-keys")
    me = page.locator("tbody tr", has_text="this session")
    me.get_by_role("button", name=re.compile(r"^Deactivate control key")).click()
    expect(page.get_by_role("alertdialog")).to_contain_text("you will be signed out")
    page.get_by_role("button", name="Yes, deactivate").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in\?ended=key$"))
    expect(page.get_by_role("status")).to_contain_text(
        "the control key of that session was deactivated"
    )
    assert desktop.cookies() == []
