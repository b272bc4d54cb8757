"""Every state change needs the session's CSRF token and a same-origin request."""

from __future__ import annotations

import pytest

from tests.unit.ingest.harness import Harness

from .browser import Browser

pytestmark = pytest.mark.unit


def data_key_ids(h: Harness, app_id: str) -> list[str]:
    return [k.key_id for k in h.apps.data_keys(app_id)]


def test_a_post_without_the_token_is_refused_and_changes_nothing(
    h: Harness, alice: Browser
) -> None:
    before = data_key_ids(h, h.alice.app_id)
    r = alice.post(f"/apps/{h.alice.app_id}/data-keys", csrf=False)
    assert r.status_code == 403 and "could not be accepted" in r.text
    assert data_key_ids(h, h.alice.app_id) == before


def test_a_wrong_token_is_refused(h: Harness, alice: Browser) -> None:
    alice.csrf = "forged"
    r = alice.post("/control-keys")
    assert r.status_code == 403
    assert len(h.apps.control_keys(h.alice.owner)) == 1


def test_the_token_of_another_session_is_refused(h: Harness, alice: Browser) -> None:
    other = Browser(h)
    other.sign_in(h.alice.control["Authorization"].removeprefix("Token "))
    assert other.csrf and other.csrf != alice.csrf
    alice.csrf = other.csrf
    assert alice.post("/control-keys").status_code == 403


def test_a_foreign_origin_is_refused_even_with_the_token(h: Harness, alice: Browser) -> None:
    r = alice.post(f"/apps/{h.alice.app_id}/data-keys", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    same = alice.post(f"/apps/{h.alice.app_id}/data-keys", headers={"Origin": "http://testserver"})
    assert same.status_code == 200


def test_sign_in_from_a_foreign_origin_is_refused(h: Harness) -> None:
    r = Browser(h).post(
        "/sign-in",
        {"key": h.alice.control["Authorization"].removeprefix("Token ")},
        csrf=False,
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    assert "set-cookie" not in r.headers


def test_sign_out_needs_the_token(h: Harness, alice: Browser) -> None:
    assert alice.post("/sign-out", csrf=False).status_code == 403
    assert alice.get("/apps").url.path == "/console/apps"


def test_an_oversized_form_is_refused(h: Harness, alice: Browser) -> None:
    r = alice.post("/apps/new", {"name": "x" * 70_000})
    assert r.status_code == 403
    assert h.apps.apps(h.alice.owner) and len(h.apps.apps(h.alice.owner)) == 1


def test_an_opaque_origin_is_refused(h: Harness, alice: Browser) -> None:
    # Browsers send `Origin: null` from sandboxed frames and data: URLs; our own pages send
    # their real origin (Referrer-Policy: same-origin, not no-referrer).
    r = alice.post(f"/apps/{h.alice.app_id}/data-keys", headers={"Origin": "null"})
    assert r.status_code == 403
    assert alice.get("/apps").headers["referrer-policy"] == "same-origin"
