"""Contract of AppStore and UsageStore, for the fakes and the Cassandra adapters."""

from __future__ import annotations

import dataclasses

from scheduler.domain.policy import DEFAULT_POLICY, DeliveryPolicy
from scheduler.security import SecretHasher, new_secret
from scheduler.store.apps import AppStore, ControlKey, DataKey
from scheduler.store.ports import Application
from scheduler.store.usage import UsageDay, UsageKind, UsageStore

T0 = 1_893_499_200_000
HASHER = SecretHasher(b"contract-test-pepper")


def app(app_id: str, owner: str = "alice@example.com", created: int = T0) -> Application:
    return Application(
        app_id=app_id,
        owner_id=owner,
        name=f"name of {app_id}",
        type="REST",
        endpoint="https://example.com/hook",
        description="first",
        auth_header_name="X-Auth",
        auth_header_value="s3cret",
        signing_secret="whsec_x",
        created_ms=created,
        updated_ms=created,
    )


def test_owners_are_created_once_and_listed(app_store: AppStore) -> None:
    app_store.ensure_owner("bob", T0)
    app_store.ensure_owner("alice", T0 + 1)
    app_store.ensure_owner("bob", T0 + 2)
    owners = app_store.list_owners()
    assert [(o.owner_id, o.created_ms) for o in owners] == [("alice", T0 + 1), ("bob", T0)]


def test_control_keys_are_found_by_hash_listed_and_deactivated_only_by_their_owner(
    app_store: AppStore,
) -> None:
    secret = new_secret()
    key = ControlKey("ck_1", "alice", True, T0)
    app_store.add_control_key(key, HASHER.hash(secret))
    app_store.add_control_key(ControlKey("ck_2", "mallory", True, T0), HASHER.hash(new_secret()))
    assert app_store.control_key(HASHER.hash(secret)) == key
    assert app_store.control_key(HASHER.hash(secret + "x")) is None
    assert app_store.control_keys("alice") == [key]

    assert app_store.deactivate_control_key("mallory", "ck_1") is False
    assert app_store.control_key(HASHER.hash(secret)) == key
    assert app_store.deactivate_control_key("alice", "ck_nope") is False

    assert app_store.deactivate_control_key("alice", "ck_1") is True
    inactive = dataclasses.replace(key, active=False)
    assert app_store.control_key(HASHER.hash(secret)) == inactive
    assert app_store.control_keys("alice") == [inactive]


def test_apps_round_trip_update_and_tombstone(app_store: AppStore) -> None:
    a = app("app-1")
    app_store.put_app(a)
    app_store.put_app(app("app-0", created=T0 + 5))
    app_store.put_app(app("app-x", owner="mallory"))
    assert app_store.get_app("app-1") == a
    assert app_store.get_app("nope") is None
    assert [x.app_id for x in app_store.apps("alice@example.com")] == ["app-1", "app-0"]

    updated = dataclasses.replace(
        a, description=None, auth_header_name=None, auth_header_value=None, updated_ms=T0 + 9
    )
    app_store.put_app(updated)
    assert app_store.get_app("app-1") == updated

    deleted = dataclasses.replace(updated, deleted_ms=T0 + 10)
    app_store.put_app(deleted)
    assert app_store.get_app("app-1") == deleted
    assert [x.app_id for x in app_store.apps("alice@example.com")] == ["app-0"]
    assert [x.app_id for x in app_store.apps("alice@example.com", include_deleted=True)] == [
        "app-1",
        "app-0",
    ]


def test_a_delivery_policy_and_failure_destination_round_trip(app_store: AppStore) -> None:
    policy = DeliveryPolicy(
        max_attempts=3,
        min_backoff_ms=500,
        max_backoff_ms=60_000,
        max_event_age_ms=3_600_000,
        rate_per_second=12.5,
        rate_burst=4,
        rate_hold_counts_toward_age=True,
        max_concurrent=2,
        http_timeout_ms=750,
    )
    shaped = dataclasses.replace(
        app("app_p"), policy=policy, failure_type="KAFKA", failure_endpoint="failures"
    )
    app_store.put_app(shaped)
    assert app_store.get_app("app_p") == shaped
    app_store.put_app(dataclasses.replace(shaped, policy=DEFAULT_POLICY, failure_type=None))
    cleared = app_store.get_app("app_p")
    assert cleared is not None
    assert cleared.policy == DEFAULT_POLICY and cleared.failure_type is None


def test_deliveries_paused_is_changed_only_by_its_own_write_later_instant_first(
    app_store: AppStore,
) -> None:
    app_store.put_app(app("app_q"))
    assert _paused(app_store, "app_q") is False
    app_store.set_deliveries_paused("app_q", True, T0 + 10)
    assert _paused(app_store, "app_q") is True
    # An update of the app (written without knowing of the pause) does not undo it.
    app_store.put_app(dataclasses.replace(app("app_q"), name="renamed"))
    assert _paused(app_store, "app_q") is True
    # A resume issued earlier but landing later loses to the pause.
    app_store.set_deliveries_paused("app_q", False, T0 + 5)
    assert _paused(app_store, "app_q") is True
    # At the same instant the pause wins.
    app_store.set_deliveries_paused("app_q", False, T0 + 10)
    assert _paused(app_store, "app_q") is True
    app_store.set_deliveries_paused("app_q", False, T0 + 11)
    assert _paused(app_store, "app_q") is False
    app_store.set_deliveries_paused("app_q", True, T0 + 12)
    assert _paused(app_store, "app_q") is True


def _paused(app_store: AppStore, app_id: str) -> bool:
    found = app_store.get_app(app_id)
    assert found is not None
    return found.deliveries_paused


def test_data_keys_belong_to_one_app(app_store: AppStore) -> None:
    app_store.put_app(app("app-1"))
    app_store.put_app(app("app-2"))
    secret = new_secret()
    key = DataKey("dk_1", "app-1", "alice@example.com", True, T0)
    app_store.add_data_key(key, HASHER.hash(secret))
    assert app_store.data_keys("app-2") == []
    assert app_store.data_keys("app-1") == [key]
    assert app_store.data_key(HASHER.hash(secret)) == key
    assert app_store.data_key(HASHER.hash("forged")) is None

    assert app_store.deactivate_data_key("app-2", "dk_1") is False
    assert app_store.data_key(HASHER.hash(secret)) == key
    assert app_store.deactivate_data_key("app-1", "dk_1") is True
    assert app_store.data_key(HASHER.hash(secret)) == dataclasses.replace(key, active=False)
    assert app_store.data_keys("app-1") == [dataclasses.replace(key, active=False)]


def test_usage_counts_add_up_per_app_and_day(usage_store: UsageStore) -> None:
    usage_store.add("app-1", 100, UsageKind.INGESTED, 3)
    usage_store.add("app-1", 100, UsageKind.INGESTED)
    usage_store.add("app-1", 100, UsageKind.SENT, 2)
    usage_store.add("app-1", 101, UsageKind.FAILED)
    usage_store.add("app-1", 90, UsageKind.SENT)
    usage_store.add("app-2", 100, UsageKind.INGESTED, 7)
    assert usage_store.read("app-1", 95, 101) == [
        UsageDay(101, failed=1),
        UsageDay(100, ingested=4, sent=2),
    ]
    assert usage_store.read("app-3", 0, 200) == []
