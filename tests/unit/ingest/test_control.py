"""The control plane with fakes: the original service's eight e2e cases and the validations."""

from __future__ import annotations

import pytest

from scheduler.store.usage import UsageKind, usage_day
from scheduler_ingest.destinations import FakeTopicDirectory
from scheduler_ingest.settings import IngestSettings

from .harness import T0, Harness, seed_owner, token

pytestmark = pytest.mark.unit

REST_APP = {"name": "orders", "type": "REST", "endpoint": "https://example.com/hook"}


@pytest.fixture
def carol(h: Harness) -> dict[str, str]:
    """An owner with a control key and no application yet."""
    tenant = seed_owner(h.apps, f"carol{h.suffix}@example.com", f"app-carol{h.suffix}", T0)
    h.client.delete(f"/applications/{tenant.app_id}", headers=tenant.control)
    return tenant.control


def test_create_an_app_and_get_it_back(h: Harness, carol: dict[str, str]) -> None:
    r = h.client.post("/applications", json=REST_APP, headers=carol)
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["signingSecret"].startswith("whsec_")
    got = h.client.get(f"/applications/{created['id']}", headers=carol).json()
    assert (got["name"], got["endpoint"], got["type"]) == ("orders", REST_APP["endpoint"], "REST")
    assert "signingSecret" not in got


def test_list_shows_exactly_the_one_created(h: Harness, carol: dict[str, str]) -> None:
    created = h.client.post("/applications", json=REST_APP, headers=carol).json()
    listed = h.client.get("/applications", headers=carol).json()
    assert [a["id"] for a in listed] == [created["id"]]


def test_update_description(h: Harness, carol: dict[str, str]) -> None:
    app_id = h.client.post("/applications", json=REST_APP, headers=carol).json()["id"]
    h.clock.advance(1_000)
    r = h.client.put(f"/applications/{app_id}", json={"description": "new"}, headers=carol)
    assert r.status_code == 200 and r.json()["description"] == "new"
    got = h.client.get(f"/applications/{app_id}", headers=carol).json()
    assert got["description"] == "new" and got["name"] == "orders"
    assert got["updated"] == "2026-01-01T00:00:01.000Z"


def test_delete_leaves_none(h: Harness, carol: dict[str, str]) -> None:
    app_id = h.client.post("/applications", json=REST_APP, headers=carol).json()["id"]
    r = h.client.delete(f"/applications/{app_id}", headers=carol)
    assert r.status_code == 200 and r.json() == {"id": app_id, "deleted": True}
    assert h.client.get("/applications", headers=carol).json() == []
    assert h.client.get(f"/applications/{app_id}", headers=carol).status_code == 404
    assert h.apps.get_app(app_id).deleted_ms == T0  # type: ignore[union-attr]  # tombstone


def test_list_control_keys_includes_the_current_one(h: Harness) -> None:
    keys = h.client.get("/control-keys", headers=h.alice.control).json()
    assert keys == [
        {"id": h.alice.control_key_id, "created": "2026-01-01T00:00:00.000Z", "active": True}
    ]


def test_create_then_deactivate_a_control_key(h: Harness) -> None:
    created = h.client.post("/control-keys", headers=h.alice.control).json()
    assert h.client.get("/control-keys", headers=token(created["secret"])).status_code == 200
    r = h.client.put(f"/control-keys/{created['id']}/deactivate", headers=h.alice.control)
    assert r.status_code == 200
    keys = {
        k["id"]: k["active"] for k in h.client.get("/control-keys", headers=h.alice.control).json()
    }
    assert keys == {h.alice.control_key_id: True, created["id"]: False}
    assert h.client.get("/control-keys", headers=token(created["secret"])).status_code == 401


def test_the_last_active_control_key_is_refused_409(h: Harness) -> None:
    r = h.client.put(f"/control-keys/{h.alice.control_key_id}/deactivate", headers=h.alice.control)
    assert r.status_code == 409 and r.json()["error"] == "last_control_key"
    assert "create another control key first" in r.json()["message"]
    assert [k.active for k in h.apps.control_keys(h.alice.owner)] == [True]
    # With a second active key, either one can go (the one used included) ...
    created = h.client.post("/control-keys", headers=h.alice.control).json()
    r = h.client.put(f"/control-keys/{h.alice.control_key_id}/deactivate", headers=h.alice.control)
    assert r.status_code == 200
    # ... and then the remaining one is the last: refused through it too.
    r = h.client.put(f"/control-keys/{created['id']}/deactivate", headers=token(created["secret"]))
    assert (r.status_code, r.json()["error"]) == (409, "last_control_key")
    # Deactivating an already deactivated key is still answered as before.
    r = h.client.put(
        f"/control-keys/{h.alice.control_key_id}/deactivate", headers=token(created["secret"])
    )
    assert r.status_code == 200
    # Another owner's key stays 404, whatever the count.
    r = h.client.put(
        f"/control-keys/{h.bob.control_key_id}/deactivate", headers=token(created["secret"])
    )
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


def test_a_new_app_has_no_data_keys(h: Harness, carol: dict[str, str]) -> None:
    app_id = h.client.post("/applications", json=REST_APP, headers=carol).json()["id"]
    assert h.client.get(f"/applications/{app_id}/data-keys", headers=carol).json() == []


def test_create_a_data_key_and_list_it(h: Harness, carol: dict[str, str]) -> None:
    app_id = h.client.post("/applications", json=REST_APP, headers=carol).json()["id"]
    created = h.client.post(f"/applications/{app_id}/data-keys", headers=carol).json()
    listed = h.client.get(f"/applications/{app_id}/data-keys", headers=carol).json()
    assert listed == [{"id": created["id"], "created": "2026-01-01T00:00:00.000Z", "active": True}]
    from .harness import basic

    r = h.client.post(
        "/messages",
        json={"payload": 1, "sendAt": "2026-01-01T00:05:00Z"},
        headers=basic(app_id, created["secret"]),
    )
    assert r.status_code == 200


def test_http_authorization_value_is_never_returned(h: Harness) -> None:
    body = {**REST_APP, "httpAuthorization": {"headerName": "X-Api-Key", "headerValue": "s3cret"}}
    created = h.client.post("/applications", json=body, headers=h.alice.control).json()
    assert created["httpAuthorization"] == {"headerName": "X-Api-Key"}
    for r in [
        h.client.get(f"/applications/{created['id']}", headers=h.alice.control),
        h.client.get("/applications", headers=h.alice.control),
        h.client.put(f"/applications/{created['id']}", json={"name": "n"}, headers=h.alice.control),
    ]:
        assert "s3cret" not in r.text
    assert h.apps.get_app(created["id"]).auth_header_value == "s3cret"  # type: ignore[union-attr]
    r = h.client.put(
        f"/applications/{created['id']}", json={"httpAuthorization": None}, headers=h.alice.control
    )
    assert r.json()["httpAuthorization"] is None
    assert h.apps.get_app(created["id"]).auth_header_value is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({**REST_APP, "endpoint": "ftp://example.com/x"}, "invalid_endpoint"),
        ({**REST_APP, "endpoint": "not a url"}, "invalid_endpoint"),
        ({**REST_APP, "endpoint": "https://user:pw@example.com/x"}, "invalid_endpoint"),
        ({**REST_APP, "type": "SOAP"}, "invalid_request"),
        ({**REST_APP, "name": ""}, "invalid_request"),
        ({**REST_APP, "owner": "bob@example.com"}, "unknown_field"),
        ({**REST_APP, "sendBackFormat": "xml"}, "invalid_request"),
        ({"name": "k", "type": "KAFKA", "endpoint": "unit.requests"}, "invalid_endpoint"),
        ({"name": "k", "type": "KAFKA", "endpoint": "unit.due.3"}, "invalid_endpoint"),
        ({"name": "k", "type": "KAFKA", "endpoint": "__consumer_offsets"}, "invalid_endpoint"),
        ({"name": "k", "type": "KAFKA", "endpoint": "other.topic"}, "invalid_endpoint"),
        ({"name": "k", "type": "KAFKA", "endpoint": "tenant.bad topic"}, "invalid_endpoint"),
        (
            {**REST_APP, "httpAuthorization": {"headerName": "bad header", "headerValue": "v"}},
            "invalid_request",
        ),
        ({**REST_APP, "deliveryPolicy": {"maxAttempts": 0}}, "invalid_request"),
        ({**REST_APP, "deliveryPolicy": {"maxAttempts": 187}}, "invalid_request"),
        ({**REST_APP, "deliveryPolicy": {"maxAttempts": "three"}}, "invalid_request"),
        ({**REST_APP, "deliveryPolicy": {"ratePerSecond": 0}}, "invalid_request"),
        ({**REST_APP, "deliveryPolicy": {"httpTimeoutMs": 10}}, "invalid_request"),
        ({**REST_APP, "deliveryPolicy": {"retries": 3}}, "unknown_field"),
        (
            {**REST_APP, "deliveryPolicy": {"minBackoffMs": 5_000, "maxBackoffMs": 1_000}},
            "invalid_delivery_policy",
        ),
        ({**REST_APP, "deliveryPolicy": {"rateBurst": 5}}, "invalid_delivery_policy"),
        (
            {**REST_APP, "failureDestination": {"type": "REST", "endpoint": "ftp://x/y"}},
            "invalid_failure_endpoint",
        ),
        (
            {**REST_APP, "failureDestination": {"type": "KAFKA", "endpoint": "unit.results"}},
            "invalid_failure_endpoint",
        ),
    ],
)
def test_invalid_applications_are_refused(h: Harness, body: dict[str, object], error: str) -> None:
    h2 = Harness(settings=IngestSettings(kafka_endpoint_prefixes=["tenant."]))
    try:
        r = h2.client.post("/applications", json=body, headers=h2.alice.control)
        assert (r.status_code, r.json()["error"]) == (400, error), r.text
        assert [a.app_id for a in h2.apps.apps(h2.alice.owner)] == [h2.alice.app_id]
    finally:
        h2.close()


def test_kafka_app_within_the_allowlist() -> None:
    h = Harness(
        settings=IngestSettings(kafka_endpoint_prefixes=["tenant."]),
        destinations=FakeTopicDirectory(["tenant.orders"]),
    )
    try:
        body = {"name": "k", "type": "KAFKA", "endpoint": "tenant.orders"}
        r = h.client.post("/applications", json=body, headers=h.alice.control)
        assert r.status_code == 200 and r.json()["type"] == "KAFKA"
        r = h.client.put(
            f"/applications/{r.json()['id']}",
            json={"endpoint": "unit.commands"},
            headers=h.alice.control,
        )
        assert (r.status_code, r.json()["error"]) == (400, "invalid_endpoint")
    finally:
        h.close()


def test_rotate_signing_secret_keeps_the_old_one_for_the_grace(h: Harness) -> None:
    created = h.client.post("/applications", json=REST_APP, headers=h.alice.control).json()
    r = h.client.post(
        f"/applications/{created['id']}/signing-secret/rotate", headers=h.alice.control
    )
    assert r.status_code == 200
    rotated = r.json()
    assert rotated["signingSecret"] != created["signingSecret"]
    assert rotated["previousSecretValidUntil"] == "2026-01-02T00:00:00.000Z"
    app = h.apps.get_app(created["id"])
    assert app is not None
    assert (app.signing_secret, app.previous_signing_secret) == (
        rotated["signingSecret"],
        created["signingSecret"],
    )


def test_usage_per_day(h: Harness) -> None:
    h.usage.add(h.alice.app_id, usage_day(T0), UsageKind.INGESTED, 5)
    h.usage.add(h.alice.app_id, usage_day(T0), UsageKind.SENT, 4)
    h.usage.add(h.alice.app_id, usage_day(T0) - 1, UsageKind.FAILED, 1)
    h.usage.add(
        h.alice.app_id, usage_day(T0) - 40, UsageKind.FAILED, 1
    )  # outside the default 30 days
    r = h.client.get(f"/applications/{h.alice.app_id}/usage", headers=h.alice.control)
    assert r.status_code == 200
    assert r.json() == {
        "appId": h.alice.app_id,
        "approximate": True,
        "days": [
            {"date": "2026-01-01", "ingested": 5, "sent": 4, "failed": 0},
            {"date": "2025-12-31", "ingested": 0, "sent": 0, "failed": 1},
        ],
    }
    r = h.client.get(
        f"/applications/{h.alice.app_id}/usage?from=2025-11-01&to=2025-11-30",
        headers=h.alice.control,
    )
    assert r.json()["days"] == [{"date": "2025-11-22", "ingested": 0, "sent": 0, "failed": 1}]
    r = h.client.get(
        f"/applications/{h.alice.app_id}/usage?from=2026-01-02&to=2026-01-01",
        headers=h.alice.control,
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_parameter")
    r = h.client.get(
        f"/applications/{h.alice.app_id}/usage?from=yesterday", headers=h.alice.control
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_parameter")


POLICY = {
    "maxAttempts": 3,
    "minBackoffMs": 500,
    "maxBackoffMs": 60_000,
    "maxEventAgeMs": 3_600_000,
    "ratePerSecond": 50.0,
    "rateBurst": 10,
    "maxConcurrent": 4,
    "httpTimeoutMs": 2_500,
}


def test_a_delivery_policy_and_failure_destination_are_saved_shown_and_replaced(
    h: Harness, carol: dict[str, str]
) -> None:
    failure = {"type": "REST", "endpoint": "https://example.com/failed"}
    body = {**REST_APP, "deliveryPolicy": POLICY, "failureDestination": failure}
    created = h.client.post("/applications", json=body, headers=carol)
    assert created.status_code == 200, created.text
    app_id = created.json()["id"]
    got = h.client.get(f"/applications/{app_id}", headers=carol).json()
    assert got["deliveryPolicy"] == POLICY
    assert got["failureDestination"] == failure and got["deliveriesPaused"] is False
    stored = h.apps.get_app(app_id)
    assert stored is not None and stored.policy.rate_per_second == 50.0
    # a policy given replaces the previous one whole; other fields are left alone
    r = h.client.put(
        f"/applications/{app_id}", json={"deliveryPolicy": {"maxAttempts": 1}}, headers=carol
    )
    assert r.status_code == 200, r.text
    assert r.json()["deliveryPolicy"] == {"maxAttempts": 1}
    assert r.json()["failureDestination"] == failure
    r = h.client.put(
        f"/applications/{app_id}",
        json={"deliveryPolicy": None, "failureDestination": None},
        headers=carol,
    )
    assert (r.json()["deliveryPolicy"], r.json()["failureDestination"]) == ({}, None)


def test_pause_and_resume_deliveries_and_an_update_does_not_undo_a_pause(
    h: Harness, carol: dict[str, str]
) -> None:
    app_id = h.client.post("/applications", json=REST_APP, headers=carol).json()["id"]
    r = h.client.put(f"/applications/{app_id}/pause", headers=carol)
    assert r.status_code == 200 and r.json()["deliveriesPaused"] is True
    h.clock.advance(1)
    r = h.client.put(f"/applications/{app_id}", json={"description": "x"}, headers=carol)
    assert r.json()["deliveriesPaused"] is True
    assert h.apps.get_app(app_id).deliveries_paused is True  # type: ignore[union-attr]
    h.clock.advance(1)
    r = h.client.put(f"/applications/{app_id}/resume", headers=carol)
    assert r.status_code == 200 and r.json()["deliveriesPaused"] is False
    assert h.apps.get_app(app_id).deliveries_paused is False  # type: ignore[union-attr]


def test_another_owner_cannot_pause_an_app(h: Harness) -> None:
    r = h.client.put(f"/applications/{h.alice.app_id}/pause", headers=h.bob.control)
    assert (r.status_code, r.json()["error"]) == (404, "app_not_found")
    assert h.apps.get_app(h.alice.app_id).deliveries_paused is False  # type: ignore[union-attr]
