"""The console's side of an application's delivery policy, failure destination and paused
deliveries: the app form (with the service's validation, what was typed kept), the detail page,
the list, and the pause / resume buttons."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest

from scheduler.domain.policy import DEFAULT_POLICY, DeliveryPolicy
from scheduler.store.ports import Application
from scheduler_ingest.destinations import FakeTopicDirectory
from scheduler_ingest.settings import IngestSettings
from tests.unit.ingest.console.browser import Browser
from tests.unit.ingest.harness import Harness

pytestmark = pytest.mark.unit

APP = {
    "name": "orders",
    "type": "REST",
    "endpoint": "https://example.com/hook",
    "send_back_format": "payload_field",
}
POLICY = {
    "max_attempts": "3",
    "min_backoff_ms": "500",
    "max_backoff_ms": "60000",
    "max_event_age_ms": "3600000",
    "rate_per_second": "2.5",
    "rate_burst": "10",
    "rate_hold_counts_toward_age": "on",
    "max_concurrent": "4",
    "http_timeout_ms": "2500",
}
NO_POLICY = {name: "" for name in POLICY if name != "rate_hold_counts_toward_age"}
FAILURE = {"failure_type": "REST", "failure_endpoint": "https://example.com/failed"}


def stored(h: Harness, app_id: str) -> Application:
    app = h.apps.get_app(app_id)
    assert app is not None
    return app


def register(b: Browser, form: dict[str, str]) -> str:
    b.get("/apps/new")
    r = b.post("/apps/new", form)
    assert r.status_code == 200 and "Application registered" in r.text, r.text
    return r.text.split('href="/console/apps/')[1].split('"')[0]


def text_of(page: str, element_id: str) -> str:
    """The text of the element with that id (tags dropped, spaces collapsed)."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</d[dl]>', page, re.S)
    assert found, f"no #{element_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())


def typed(page: str, name: str) -> str:
    found = re.search(rf'<input id="{name}" name="{name}" value="([^"]*)"', page)
    assert found, f"no input {name}"
    return html.unescape(found.group(1))


# -- the form and the detail page -------------------------------------------------------------


def test_register_with_a_policy_and_a_failure_destination(h: Harness, alice: Browser) -> None:
    form_page = alice.get("/apps/new").text
    assert "Delivery policy" in form_page and "Failure destination" in form_page
    assert "1 to 186" in form_page and "100 to 60,000 (1 min)" in form_page  # the bounds
    app_id = register(alice, {**APP, **POLICY, **FAILURE})
    app = stored(h, app_id)
    assert app.policy == DeliveryPolicy(
        max_attempts=3,
        min_backoff_ms=500,
        max_backoff_ms=60_000,
        max_event_age_ms=3_600_000,
        rate_per_second=2.5,
        rate_burst=10,
        rate_hold_counts_toward_age=True,
        max_concurrent=4,
        http_timeout_ms=2_500,
    )
    assert (app.failure_type, app.failure_endpoint) == ("REST", "https://example.com/failed")
    assert app.deliveries_paused is False
    detail = alice.get(f"/apps/{app_id}").text
    policy = text_of(detail, "delivery-policy")
    for shown in (
        "Max attempts: 3",
        "Min backoff: 500 ms",
        "Max backoff: 60,000 ms (1 min)",
        "Max event age: 3,600,000 ms (1 h)",
        "Rate limit: 2.5 per second",
        "Rate burst: 10",
        "counts toward the max event age",
        "Max concurrent requests: 4",
        "HTTP timeout: 2,500 ms (2.5 s)",
    ):
        assert shown in policy, (shown, policy)
    assert "service defaults" not in policy
    assert text_of(detail, "failure-destination") == "REST https://example.com/failed"
    assert text_of(detail, "deliveries-state") == "running"
    # The edit form starts from what is stored.
    edit = alice.get(f"/apps/{app_id}/edit").text
    assert typed(edit, "max_attempts") == "3" and typed(edit, "rate_per_second") == "2.5"
    assert typed(edit, "failure_endpoint") == "https://example.com/failed"
    assert 'name="rate_hold_counts_toward_age" checked' in edit
    assert 'name="failure_type" value="REST" checked' in edit


def test_an_app_without_a_policy_shows_the_service_defaults(h: Harness, alice: Browser) -> None:
    app_id = register(alice, {**APP, **NO_POLICY, "failure_type": ""})
    app = stored(h, app_id)
    assert app.policy == DEFAULT_POLICY and app.failure_type is None
    detail = alice.get(f"/apps/{app_id}").text
    assert text_of(detail, "delivery-policy") == "service defaults"
    assert text_of(detail, "failure-destination") == "none"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"max_attempts": "187"}, "max_attempts", "Max attempts: a whole number"),
        ({"max_attempts": "three"}, "max_attempts", "from 1 to 186"),
        ({"rate_per_second": "0"}, "rate_per_second", "a number from 0.01 to 100,000"),
        ({"http_timeout_ms": "10"}, "http_timeout_ms", "from 100 to 60,000"),
        ({"max_event_age_ms": "1.5"}, "max_event_age_ms", "Max event age (ms): a whole"),
        # the service's invalid_delivery_policy, on the field it names first
        (
            {"min_backoff_ms": "5000", "max_backoff_ms": "1000"},
            "min_backoff_ms",
            "minBackoffMs must not exceed maxBackoffMs",
        ),
        (
            {"rate_per_second": "", "rate_burst": "5"},
            "rate_burst",
            "rateBurst needs ratePerSecond",
        ),
        # the service's invalid_endpoint, on the failure destination's field
        ({"failure_endpoint": "ftp://example.com/x"}, "failure_endpoint", "absolute http(s)"),
        ({"failure_endpoint": ""}, "failure_endpoint", "Enter the failure destination"),
        ({"failure_type": "SMTP"}, "failure_type", "Choose none, REST or KAFKA"),
        ({"failure_type": ""}, "failure_type", "or empty its endpoint for none"),
    ],
)
def test_a_refused_register_form_keeps_what_was_typed(
    h: Harness, alice: Browser, changes: dict[str, str], field: str, message: str
) -> None:
    form = {**APP, **POLICY, **FAILURE, **changes}
    alice.get("/apps/new")
    r = alice.post("/apps/new", form)
    assert r.status_code == 400, r.text
    page = html.unescape(r.text)
    assert message in page and f'id="{field}-error"' in r.text and 'role="alert"' in r.text
    assert f'aria-describedby="{field}-hint {field}-error"' in r.text or field == "failure_type"
    assert len(re.findall(r'class="field-error"', r.text)) == 1  # on that field only
    for name in (*NO_POLICY, "failure_endpoint", "name", "endpoint"):
        assert typed(r.text, name) == form[name], name
    assert [a.app_id for a in h.apps.apps(h.alice.owner)] == [h.alice.app_id]


def test_a_bad_app_endpoint_is_not_blamed_on_the_failure_destination(
    h: Harness, alice: Browser
) -> None:
    alice.get("/apps/new")
    r = alice.post("/apps/new", {**APP, **FAILURE, "endpoint": "ftp://example.com/x"})
    assert r.status_code == 400
    assert 'id="endpoint-error"' in r.text and 'id="failure_endpoint-error"' not in r.text
    assert typed(r.text, "failure_endpoint") == FAILURE["failure_endpoint"]  # kept as typed


def test_edit_replaces_the_policy_and_all_fields_empty_clear_it(h: Harness, alice: Browser) -> None:
    app_id = register(alice, {**APP, **POLICY, **FAILURE})
    alice.get(f"/apps/{app_id}/edit")
    r = alice.post(f"/apps/{app_id}/edit", {**APP, **NO_POLICY, "max_attempts": "7", **FAILURE})
    assert r.url.path == f"/console/apps/{app_id}" and "Application saved." in r.text
    assert stored(h, app_id).policy == DeliveryPolicy(max_attempts=7)  # replaced whole
    assert text_of(r.text, "delivery-policy").startswith("Max attempts: 7 ")
    # a refused edit keeps what was typed and changes nothing
    alice.get(f"/apps/{app_id}/edit")
    bad = alice.post(f"/apps/{app_id}/edit", {**APP, **NO_POLICY, "rate_burst": "0"})
    assert bad.status_code == 400 and 'id="rate_burst-error"' in bad.text
    assert typed(bad.text, "rate_burst") == "0"
    assert stored(h, app_id).policy == DeliveryPolicy(max_attempts=7)
    # every policy field empty, no failure destination: both removed
    alice.get(f"/apps/{app_id}/edit")
    r = alice.post(f"/apps/{app_id}/edit", {**APP, **NO_POLICY, "failure_type": ""})
    assert r.url.path == f"/console/apps/{app_id}", r.text
    app = stored(h, app_id)
    assert app.policy == DEFAULT_POLICY and (app.failure_type, app.failure_endpoint) == (
        None,
        None,
    )
    assert text_of(r.text, "delivery-policy") == "service defaults"
    assert text_of(r.text, "failure-destination") == "none"


# -- KAFKA failure destinations ---------------------------------------------------------------


@pytest.fixture
def kh() -> Iterator[Harness]:
    harness = Harness(
        settings=IngestSettings(
            usage_flush_ms=0, console_cookie_secure=False, kafka_endpoint_prefixes=["customer."]
        ),
        destinations=FakeTopicDirectory(["customer.reminders", "customer.failed"]),
    )
    yield harness
    harness.close()


def test_a_kafka_failure_topic_is_checked_and_its_errors_shown_on_its_field(
    kh: Harness,
) -> None:
    b = Browser(kh)
    b.sign_in(kh.alice.control["Authorization"].removeprefix("Token "))
    kafka_app = {**APP, "type": "KAFKA", "endpoint": "customer.reminders"}
    for failure, message in (
        ("customer.missing", "does not exist: create it first"),
        ("unit.requests", "system's own topics"),
    ):
        b.get("/apps/new")
        r = b.post("/apps/new", {**APP, "failure_type": "KAFKA", "failure_endpoint": failure})
        assert r.status_code == 400 and message in html.unescape(r.text), r.text
        assert 'id="failure_endpoint-error"' in r.text and 'id="endpoint-error"' not in r.text
        assert typed(r.text, "failure_endpoint") == failure
    app_id = register(
        b, {**kafka_app, "failure_type": "KAFKA", "failure_endpoint": "customer.failed"}
    )
    assert (stored(kh, app_id).failure_type, stored(kh, app_id).failure_endpoint) == (
        "KAFKA",
        "customer.failed",
    )
    # Two topics, the app's unchanged: the refusal is the failure topic's.
    b.get(f"/apps/{app_id}/edit")
    r = b.post(
        f"/apps/{app_id}/edit",
        {**kafka_app, "failure_type": "KAFKA", "failure_endpoint": "unit.requests"},
    )
    assert r.status_code == 400 and 'id="failure_endpoint-error"' in r.text
    assert 'id="endpoint-error"' not in r.text
    assert stored(kh, app_id).failure_endpoint == "customer.failed"


# -- pause and resume -------------------------------------------------------------------------


def test_pause_asks_first_then_resume_through_the_buttons(h: Harness, alice: Browser) -> None:
    app_id = h.alice.app_id
    detail = alice.get(f"/apps/{app_id}").text
    assert f'action="/console/apps/{app_id}/pause"' in detail and "Pause deliveries" in detail
    assert text_of(detail, "deliveries-state") == "running"
    asked = alice.post(f"/apps/{app_id}/pause")
    said = html.unescape(asked.text)
    assert asked.status_code == 200 and "Pause the deliveries of" in said
    assert "are not attempted and are not failed" in said
    assert 'name="confirmed" value="yes"' in asked.text
    assert stored(h, app_id).deliveries_paused is False  # nothing changed yet
    r = alice.post(f"/apps/{app_id}/pause", {"confirmed": "yes"})
    assert r.url.path == f"/console/apps/{app_id}"
    assert "paused: due messages wait until you resume" in r.text  # the notice
    assert stored(h, app_id).deliveries_paused is True
    assert text_of(r.text, "deliveries-state").startswith("paused")
    assert f'action="/console/apps/{app_id}/resume"' in r.text
    assert f'action="/console/apps/{app_id}/pause"' not in r.text
    listed = alice.get("/apps").text
    row = next(line for line in listed.splitlines() if f'/apps/{app_id}"' in line)
    assert "deliveries paused" in row
    assert listed.count("deliveries paused") == 1  # the other apps are not marked
    h.clock.advance(1)  # changes are ordered by their instants (a tie: paused)
    r = alice.post(f"/apps/{app_id}/resume")  # no confirmation step
    assert r.url.path == f"/console/apps/{app_id}"
    assert "resumed: what waited is delivered now" in r.text
    assert stored(h, app_id).deliveries_paused is False
    assert text_of(r.text, "deliveries-state") == "running"
    assert "deliveries paused" not in alice.get("/apps").text
    metrics = h.metrics_text()
    assert 'scheduler_console_actions_total{action="pause_deliveries"} 1.0' in metrics
    assert 'scheduler_console_actions_total{action="resume_deliveries"} 1.0' in metrics


def test_an_edit_does_not_undo_a_pause(h: Harness, alice: Browser) -> None:
    app_id = h.alice.app_id
    alice.get(f"/apps/{app_id}")
    alice.post(f"/apps/{app_id}/pause", {"confirmed": "yes"})
    h.clock.advance(1)
    alice.get(f"/apps/{app_id}/edit")
    r = alice.post(f"/apps/{app_id}/edit", {**APP, **NO_POLICY, "max_attempts": "2"})
    assert "Application saved." in r.text
    assert stored(h, app_id).deliveries_paused is True


def test_pause_and_resume_of_another_owners_app_are_not_found(h: Harness, alice: Browser) -> None:
    alice.get("/apps")
    own = alice.post(f"/apps/{h.alice.app_id}/pause")  # the same post, for one's own app
    assert own.status_code == 200 and "Pause the deliveries of" in own.text
    for action in ("pause", "resume"):
        for form in ({}, {"confirmed": "yes"}):
            r = alice.post(f"/apps/{h.bob.app_id}/{action}", form)
            assert r.status_code == 404 and "No such page." in r.text, (action, form)
    assert stored(h, h.bob.app_id).deliveries_paused is False


def test_pause_and_resume_without_the_csrf_token_are_refused(h: Harness, alice: Browser) -> None:
    app_id = h.alice.app_id
    alice.get(f"/apps/{app_id}")
    r = alice.post(f"/apps/{app_id}/pause", {"confirmed": "yes"}, csrf=False)
    assert r.status_code == 403
    assert stored(h, app_id).deliveries_paused is False
    alice.post(f"/apps/{app_id}/pause", {"confirmed": "yes"})
    h.clock.advance(1)
    r = alice.post(f"/apps/{app_id}/resume", csrf=False)
    assert r.status_code == 403
    assert stored(h, app_id).deliveries_paused is True
    r = alice.post(f"/apps/{app_id}/edit", {**APP, **NO_POLICY, "max_attempts": "2"}, csrf=False)
    assert r.status_code == 403 and stored(h, app_id).policy == DEFAULT_POLICY
