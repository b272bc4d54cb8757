"""Console sign-in, sessions and sign-out."""

from __future__ import annotations

import base64
import json

import pytest

from scheduler.security import SecretHasher
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


def test_sign_out_deletes_the_cookie(h: Harness, alice: Browser) -> None:
    old = alice.client.cookies.get("scheduler_console")
    r = alice.post("/sign-out", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    assert 'scheduler_console=""' in r.headers["set-cookie"]
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert alice.get("/apps").url.path == "/console/sign-in"
    # Stateless sessions (services/ingest/README.md): a copy of the cookie taken before the
    # sign-out lasts until its idle expiry at most, unless its key is deactivated.
    replay = Browser(h)
    replay.client.cookies.set("scheduler_console", old or "", path="/console")
    h.clock.advance(h.settings.console_session_ttl_ms)
    assert replay.get("/apps").url.path == "/console/sign-in"


def test_a_session_expires_after_the_idle_ttl(h: Harness, alice: Browser) -> None:
    h.clock.advance(h.settings.console_session_ttl_ms - 1)
    assert alice.get("/apps").url.path == "/console/apps"  # use pushes the expiry back
    h.clock.advance(h.settings.console_session_ttl_ms - 1)
    assert alice.get("/apps").url.path == "/console/apps"
    h.clock.advance(h.settings.console_session_ttl_ms)
    assert alice.get("/apps").url.path == "/console/sign-in"
    assert "scheduler_console" not in alice.client.cookies  # the dead cookie is deleted


def test_a_session_ends_at_its_max_age_however_used(h: Harness, alice: Browser) -> None:
    step = h.settings.console_session_ttl_ms // 2
    used = 0
    while used + step < h.settings.console_session_max_age_ms:
        h.clock.advance(step)
        used += step
        assert alice.get("/apps").url.path == "/console/apps"
    h.clock.advance(step)
    assert alice.get("/apps").url.path == "/console/sign-in"


def test_a_session_works_on_any_replica_sharing_the_pepper(h: Harness, alice: Browser) -> None:
    """No sticky sessions: another replica (same stores, same SCHEDULER_SECRET_PEPPER) accepts
    the cookie, its CSRF token and its notices; a replica with another pepper does not."""
    other = Harness(
        settings=h.settings, clock=h.clock, messages=h.messages, apps=h.apps, usage=h.usage
    )
    foreign = Harness(settings=h.settings, hasher=SecretHasher(b"another-pepper-entirely"))
    try:
        replica = Browser(other)
        replica.client.cookies = alice.client.cookies
        page = replica.get("/control-keys")
        assert page.url.path == "/console/control-keys" and h.alice.control_key_id in page.text
        assert replica.csrf == alice.csrf
        r = replica.post(f"/apps/{h.alice.app_id}/data-keys")
        assert r.status_code == 200 and "Data key created" in r.text
        stranger = Browser(foreign)
        stranger.client.cookies = alice.client.cookies
        assert stranger.get("/apps").url.path == "/console/sign-in"
    finally:
        other.close()
        foreign.close()


def test_the_session_key_is_derived_per_purpose() -> None:
    hasher = SecretHasher(b"a-pepper-of-enough-length")
    key = hasher.derive("console-session")
    assert len(key) == 32 and key == SecretHasher(b"a-pepper-of-enough-length").derive(
        "console-session"
    )
    assert key != hasher.derive("something-else")
    assert key != SecretHasher(b"another-pepper-entirely").derive("console-session")
    assert key != hasher.hash("console-session")  # never a stored key hash


def test_a_tampered_cookie_is_refused(h: Harness, alice: Browser) -> None:
    value = alice.client.cookies.get("scheduler_console") or ""
    payload, mac = value.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["o"] = h.bob.owner
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode().rstrip("=")
    b = Browser(h)
    for bad in (f"{forged}.{mac}", value[:-2], "not-a-session", ""):
        b.client.cookies.set("scheduler_console", bad, path="/console")
        assert b.get("/apps").url.path == "/console/sign-in", bad


def test_deactivating_the_key_elsewhere_ends_the_session(h: Harness, alice: Browser) -> None:
    other = h.client.post("/control-keys", headers=h.alice.control).json()
    r = h.client.put(
        f"/control-keys/{h.alice.control_key_id}/deactivate",
        headers={"Authorization": f"Token {other['secret']}"},
    )
    assert r.status_code == 200
    assert alice.get("/apps").url.path == "/console/sign-in"


def test_signing_in_again_replaces_the_session_id(h: Harness, alice: Browser) -> None:
    before, csrf = alice.client.cookies.get("scheduler_console"), alice.csrf
    alice.sign_in(key_of(h.alice.control))
    after = alice.client.cookies.get("scheduler_console")
    assert before and after and before != after
    assert alice.csrf and alice.csrf != csrf


def test_a_notice_is_shown_once_and_only_to_its_session(h: Harness, alice: Browser) -> None:
    alice.get(f"/apps/{h.alice.app_id}")
    r = alice.post(
        f"/apps/{h.alice.app_id}/data-keys/{h.alice.data_key_id}/deactivate",
        {"confirmed": "yes"},
        follow_redirects=False,
    )
    notice = alice.client.cookies.get("scheduler_console_notice")
    assert r.status_code == 303 and notice
    other = Browser(h)
    other.sign_in(key_of(h.alice.control))
    other.client.cookies.set("scheduler_console_notice", notice, path="/console")
    assert "deactivated." not in other.get(f"/apps/{h.alice.app_id}").text
    assert (
        f"Data key {h.alice.data_key_id} deactivated." in alice.get(f"/apps/{h.alice.app_id}").text
    )
    assert "scheduler_console_notice" not in alice.client.cookies
    assert f"Data key {h.alice.data_key_id} deactivated." not in alice.get("/apps").text


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
