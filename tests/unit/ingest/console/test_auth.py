"""Console sign-in, sessions and sign-out."""

from __future__ import annotations

import pytest

from scheduler_ingest.settings import IngestSettings
from tests.unit.ingest.harness import Harness

from .browser import Browser

pytestmark = pytest.mark.unit


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Token ")


def test_pages_redirect_to_sign_in_without_a_session(h: Harness) -> None:
    b = Browser(h)
    for path in ("/", "/apps", f"/apps/{h.alice.app_id}", "/control-keys"):
        r = b.get(path)
        assert r.status_code == 200 and r.url.path == "/console/sign-in", path
    assert '<label for="key">Control key</label>' in b.get("/sign-in").text


def test_console_root_without_slash_redirects(h: Harness) -> None:
    r = h.client.get("/console", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/console/"


def test_a_wrong_key_is_refused(h: Harness) -> None:
    b = Browser(h)
    r = b.post("/sign-in", {"key": "not-a-key"}, csrf=False)
    assert r.status_code == 401
    assert "This control key was refused." in r.text
    assert "set-cookie" not in r.headers
    assert b.get("/apps").url.path == "/console/sign-in"


def test_a_data_key_secret_does_not_sign_in(h: Harness) -> None:
    import base64

    basic = h.alice.data["Authorization"].removeprefix("Basic ")
    data_secret = base64.b64decode(basic).decode().split(":", 1)[1]
    r = Browser(h).post("/sign-in", {"key": data_secret}, csrf=False)
    assert r.status_code == 401


def test_sign_in_sets_a_session_cookie_that_is_not_the_key(h: Harness) -> None:
    b = Browser(h)
    key = key_of(h.alice.control)
    r = b.post("/sign-in", {"key": key}, csrf=False, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/apps"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("scheduler_console=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # turned off in these tests (plain http)
    assert key not in cookie and key not in r.headers["location"]
    page = b.get("/apps")
    assert page.url.path == "/console/apps" and h.alice.owner in page.text
    assert key not in page.text


def test_the_cookie_is_secure_by_default() -> None:
    h = Harness()  # default settings: console_cookie_secure=True
    try:
        r = h.client.post(
            "/console/sign-in", data={"key": key_of(h.alice.control)}, follow_redirects=False
        )
        assert r.status_code == 303
        assert "Secure" in r.headers["set-cookie"]
    finally:
        h.close()


def test_sign_out_ends_the_session(h: Harness, alice: Browser) -> None:
    old = alice.client.cookies.get("scheduler_console")
    r = alice.post("/sign-out", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    assert 'scheduler_console=""' in r.headers["set-cookie"]
    assert "Max-Age=0" in r.headers["set-cookie"]
    # The old session id is dead even if a client kept it.
    replay = Browser(h)
    replay.client.cookies.set("scheduler_console", old or "", path="/console")
    assert replay.get("/apps").url.path == "/console/sign-in"


def test_a_session_expires_after_the_idle_ttl(h: Harness, alice: Browser) -> None:
    h.clock.advance(h.settings.console_session_ttl_ms - 1)
    assert alice.get("/apps").url.path == "/console/apps"  # use pushes the expiry back
    h.clock.advance(h.settings.console_session_ttl_ms)
    assert alice.get("/apps").url.path == "/console/sign-in"


def test_deactivating_the_key_elsewhere_ends_the_session(h: Harness, alice: Browser) -> None:
    other = h.client.post("/control-keys", headers=h.alice.control).json()
    r = h.client.put(
        f"/control-keys/{h.alice.control_key_id}/deactivate",
        headers={"Authorization": f"Token {other['secret']}"},
    )
    assert r.status_code == 200
    assert alice.get("/apps").url.path == "/console/sign-in"


def test_sessions_are_bounded() -> None:
    h = Harness(
        settings=IngestSettings(
            usage_flush_ms=0, console_cookie_secure=False, console_sessions_max=2
        )
    )
    try:
        browsers = [Browser(h) for _ in range(3)]
        for b in browsers:
            b.sign_in(key_of(h.alice.control))
        assert browsers[0].get("/apps").url.path == "/console/sign-in"  # the oldest dropped
        assert browsers[2].get("/apps").url.path == "/console/apps"
    finally:
        h.close()


def test_signing_in_again_replaces_the_session_id(h: Harness, alice: Browser) -> None:
    before = alice.client.cookies.get("scheduler_console")
    alice.sign_in(key_of(h.alice.control))
    after = alice.client.cookies.get("scheduler_console")
    assert before and after and before != after
    stale = Browser(h)
    stale.client.cookies.set("scheduler_console", before, path="/console")
    assert stale.get("/apps").url.path == "/console/sign-in"


def test_pages_carry_security_headers(alice: Browser) -> None:
    r = alice.get("/apps")
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def test_an_unexpected_error_is_a_page_not_a_trace(h: Harness, alice: Browser) -> None:
    def broken(owner_id: str, include_deleted: bool = False) -> list[object]:
        raise RuntimeError("store exploded")

    h.apps.apps = broken  # type: ignore[method-assign]
    r = alice.get("/apps")
    assert r.status_code == 500
    assert "Something went wrong" in r.text and "exploded" not in r.text
