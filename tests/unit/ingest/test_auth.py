"""Authentication and the tenant-isolation matrix (fakes)."""

from __future__ import annotations

import base64

import pytest

from scheduler.domain.ids import new_message_id
from scheduler.security import new_secret

from .harness import T0, Harness, basic, token

pytestmark = pytest.mark.unit

SOON = "2026-01-01T00:05:00Z"
BODY = {"payload": 1, "sendAt": SOON}


ALICE_APP = "Basic <alice's app id>:"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic !!!notbase64",
        f"Basic {_b64(b'no-colon')}",
        f"Basic {_b64(b':secret-without-app')}",
        ALICE_APP,
        f"{ALICE_APP}wrong-secret",
        f"Basic {_b64(bytes([0xFF, 0x3A, 0x41]))}",
        "Bearer abc",
        "Token",
        f"Token {'x' * 2000}",
    ],
)
def test_malformed_forged_or_unknown_credentials_are_401(h: Harness, header: str | None) -> None:
    if header is not None and header.startswith(ALICE_APP):
        # a real app id (known only once the harness exists) with an empty or a wrong secret
        secret = header.removeprefix(ALICE_APP)
        header = f"Basic {_b64(f'{h.alice.app_id}:{secret}'.encode())}"
    headers = {} if header is None else {"Authorization": header}
    r = h.client.post("/messages", json=BODY, headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized"), r.text
    assert h.published() == []
    r = h.client.get("/applications", headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")


def test_a_valid_secret_with_another_app_id_is_401(h: Harness) -> None:
    alice_secret = base64.b64decode(h.alice.data["Authorization"].split()[1]).split(b":", 1)[1]
    forged = basic(h.bob.app_id, alice_secret.decode())
    assert h.client.post("/messages", json=BODY, headers=forged).status_code == 401
    assert h.published() == []


def test_key_kinds_are_not_interchangeable(h: Harness) -> None:
    # a valid control key on a data route, a valid data key on control routes: 403
    r = h.client.post("/messages", json=BODY, headers=h.alice.control)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    for method, path in [
        ("GET", "/applications"),
        ("POST", "/applications"),
        ("GET", f"/applications/{h.alice.app_id}"),
        ("PUT", f"/applications/{h.alice.app_id}"),
        ("DELETE", f"/applications/{h.alice.app_id}"),
        ("POST", f"/applications/{h.alice.app_id}/data-keys"),
        ("GET", f"/applications/{h.alice.app_id}/data-keys"),
        ("PUT", f"/applications/{h.alice.app_id}/data-keys/{h.alice.data_key_id}/deactivate"),
        ("POST", "/control-keys"),
        ("GET", "/control-keys"),
        ("PUT", f"/control-keys/{h.alice.control_key_id}/deactivate"),
        ("GET", f"/applications/{h.alice.app_id}/messages"),
        ("POST", f"/applications/{h.alice.app_id}/signing-secret/rotate"),
        ("GET", f"/applications/{h.alice.app_id}/usage"),
    ]:
        r = h.client.request(method, path, headers=h.alice.data, json={"name": "x"})
        assert (r.status_code, r.json()["error"]) == (403, "forbidden"), (method, path, r.text)
    # nothing was created or deactivated by those attempts
    assert [k.active for k in h.apps.data_keys(h.alice.app_id)] == [True]
    assert len(h.apps.control_keys(h.alice.owner)) == 1
    assert h.apps.get_app(h.alice.app_id) is not None
    assert h.apps.get_app(h.alice.app_id).deleted_ms is None  # type: ignore[union-attr]


def test_data_key_of_app_a_cannot_reach_app_b_messages(h: Harness) -> None:
    bob_id = h.schedule(BODY, h.bob).json()["messageId"]
    for method, path in [
        ("GET", f"/messages/{bob_id}"),
        ("GET", f"/messages/{bob_id}/logs"),
        ("PUT", f"/messages/{bob_id}/abort"),
        ("PUT", f"/messages/{bob_id}/redrive"),
    ]:
        r = h.client.request(method, path, headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (404, "message_not_found"), path
    listed = h.client.get("/messages", headers=h.alice.data).json()["messages"]
    assert listed == []
    assert h.messages.get(h.bob.app_id, bob_id).state.status.value == "READY"  # type: ignore[union-attr]


def test_owner_x_cannot_reach_owner_y_apps_keys_or_messages(h: Harness) -> None:
    bob_id = h.schedule(BODY, h.bob).json()["messageId"]
    for method, path in [
        ("GET", f"/applications/{h.bob.app_id}"),
        ("PUT", f"/applications/{h.bob.app_id}"),
        ("DELETE", f"/applications/{h.bob.app_id}"),
        ("POST", f"/applications/{h.bob.app_id}/data-keys"),
        ("GET", f"/applications/{h.bob.app_id}/data-keys"),
        ("PUT", f"/applications/{h.bob.app_id}/data-keys/{h.bob.data_key_id}/deactivate"),
        ("POST", f"/applications/{h.bob.app_id}/signing-secret/rotate"),
        ("GET", f"/applications/{h.bob.app_id}/usage"),
        ("GET", f"/applications/{h.bob.app_id}/messages"),
        ("GET", f"/applications/{h.bob.app_id}/messages/{bob_id}"),
        ("GET", f"/applications/{h.bob.app_id}/messages/{bob_id}/logs"),
        ("PUT", f"/applications/{h.bob.app_id}/messages/{bob_id}/abort"),
        ("PUT", f"/applications/{h.bob.app_id}/messages/{bob_id}/redrive"),
    ]:
        r = h.client.request(method, path, headers=h.alice.control, json={"name": "x"})
        assert (r.status_code, r.json()["error"]) == (404, "app_not_found"), (path, r.text)
    # alice's data key id under her own app path does not reach bob's key either
    r = h.client.put(
        f"/applications/{h.alice.app_id}/data-keys/{h.bob.data_key_id}/deactivate",
        headers=h.alice.control,
    )
    assert r.status_code == 404
    r = h.client.put(f"/control-keys/{h.bob.control_key_id}/deactivate", headers=h.alice.control)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    assert [k.active for k in h.apps.control_keys(h.bob.owner)] == [True]
    assert [k.active for k in h.apps.data_keys(h.bob.app_id)] == [True]
    assert h.apps.get_app(h.bob.app_id).deleted_ms is None  # type: ignore[union-attr]
    assert [a["id"] for a in h.client.get("/applications", headers=h.alice.control).json()] == [
        h.alice.app_id
    ]
    assert h.client.get(f"/messages/{bob_id}", headers=h.bob.data).json()["status"] == "READY"


def test_deactivated_keys_are_401_at_once_on_this_replica(h: Harness) -> None:
    assert h.schedule(BODY).status_code == 200  # caches the key
    r = h.client.put(
        f"/applications/{h.alice.app_id}/data-keys/{h.alice.data_key_id}/deactivate",
        headers=h.alice.control,
    )
    assert r.status_code == 200 and r.json() == {"id": h.alice.data_key_id, "active": False}
    assert h.schedule(BODY).status_code == 401

    assert h.client.get("/control-keys", headers=h.alice.control).status_code == 200
    h.client.post("/control-keys", headers=h.alice.control)  # not the owner's last key then
    r = h.client.put(f"/control-keys/{h.alice.control_key_id}/deactivate", headers=h.alice.control)
    assert r.status_code == 200
    assert h.client.get("/control-keys", headers=h.alice.control).status_code == 401


def test_deactivation_elsewhere_takes_effect_within_the_cache_ttl(h: Harness) -> None:
    assert h.schedule(BODY).status_code == 200
    h.apps.deactivate_data_key(h.alice.app_id, h.alice.data_key_id)  # as another replica would
    assert h.schedule(BODY).status_code == 200  # still cached
    h.clock.advance(h.settings.key_cache_ttl_ms)
    assert h.schedule(BODY).status_code == 401


def test_a_deleted_apps_keys_stop_working(h: Harness) -> None:
    assert h.schedule(BODY).status_code == 200
    assert (
        h.client.delete(f"/applications/{h.alice.app_id}", headers=h.alice.control).status_code
        == 200
    )
    assert h.schedule(BODY).status_code == 401
    assert [k.active for k in h.apps.data_keys(h.alice.app_id)] == [False]


def test_unknown_message_ids_are_404(h: Harness) -> None:
    for message_id in [new_message_id(T0), "not-an-id", "x" * 300]:
        r = h.client.get(f"/messages/{message_id}", headers=h.alice.data)
        assert (r.status_code, r.json()["error"]) == (404, "message_not_found")


def test_secrets_are_stored_only_hashed(h: Harness) -> None:
    r = h.client.post("/control-keys", headers=h.alice.control)
    secret = r.json()["secret"]
    assert len(secret) >= 22  # >= 128 bits of base64
    assert secret not in repr(h.apps.__dict__)
    assert h.client.get("/control-keys", headers=token(secret)).status_code == 200
    assert h.client.get("/control-keys", headers=token(new_secret())).status_code == 401
