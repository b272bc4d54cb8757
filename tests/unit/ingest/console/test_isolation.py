"""Another owner's application, keys and messages are not reachable by URL: 404, no change."""

from __future__ import annotations

import pytest

from scheduler.domain.status import Status
from tests.unit.ingest.console.browser import Browser
from tests.unit.ingest.harness import T0, Harness

pytestmark = pytest.mark.unit


@pytest.fixture
def bobs_message(h: Harness) -> str:
    r = h.schedule({"payload": "p", "sendAt": T0 + 600_000}, h.bob)
    assert r.status_code == 200
    return str(r.json()["messageId"])


@pytest.mark.parametrize(
    "path",
    [
        "/apps/{app}",
        "/apps/{app}/edit",
        "/apps/{app}/usage",
        "/apps/{app}/messages",
        "/apps/{app}/messages/{msg}",
        "/apps/no-such-app",
    ],
)
def test_pages_of_another_owner_are_not_found(
    h: Harness, alice: Browser, bobs_message: str, path: str
) -> None:
    r = alice.get(path.format(app=h.bob.app_id, msg=bobs_message))
    assert r.status_code == 404 and "No such page." in r.text
    assert h.bob.app_id not in r.text


def test_another_apps_message_through_my_app_is_not_found(
    h: Harness, alice: Browser, bobs_message: str
) -> None:
    r = alice.get(f"/apps/{h.alice.app_id}/messages/{bobs_message}")
    assert r.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/apps/{app}/edit",
        "/apps/{app}/delete",
        "/apps/{app}/data-keys",
        "/apps/{app}/data-keys/{key}/deactivate",
        "/apps/{app}/messages/{msg}/abort",
        "/apps/{app}/messages/{msg}/redrive",
    ],
)
def test_changes_to_another_owner_are_not_found_and_change_nothing(
    h: Harness, alice: Browser, bobs_message: str, path: str
) -> None:
    alice.get("/apps")
    before_keys = h.apps.data_keys(h.bob.app_id)
    r = alice.post(
        path.format(app=h.bob.app_id, key=h.bob.data_key_id, msg=bobs_message),
        {"name": "taken", "type": "REST", "endpoint": "https://evil.example/", "confirm": "x"},
    )
    assert r.status_code == 404
    app = h.apps.get_app(h.bob.app_id)
    assert app is not None and app.deleted_ms is None and app.name == "bob@example.com's app"
    assert h.apps.data_keys(h.bob.app_id) == before_keys
    view = h.messages.get(h.bob.app_id, bobs_message)
    assert view is not None and view.state.status is Status.READY


def test_another_owners_data_key_through_my_app_is_not_found(h: Harness, alice: Browser) -> None:
    alice.get("/apps")
    r = alice.post(f"/apps/{h.alice.app_id}/data-keys/{h.bob.data_key_id}/deactivate")
    assert r.status_code == 404
    assert all(k.active for k in h.apps.data_keys(h.bob.app_id))


def test_another_owners_control_key_is_not_found(h: Harness, alice: Browser) -> None:
    alice.get("/control-keys")
    r = alice.post(f"/control-keys/{h.bob.control_key_id}/deactivate")
    assert r.status_code == 404
    assert all(k.active for k in h.apps.control_keys(h.bob.owner))
    assert h.bob.control_key_id not in alice.get("/control-keys").text
