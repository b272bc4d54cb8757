"""`scheduler setup` against the real servers: creates everything, and is idempotent."""

from __future__ import annotations

import dataclasses

import pytest
from cassandra.cluster import Session
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource

from scheduler.cli import setup
from scheduler.domain.idempotency import KeyClaim, claim_ttl_ms
from scheduler.domain.policy import DEFAULT_POLICY, DeliveryPolicy
from scheduler.domain.recurrence import Recurrence
from scheduler.domain.status import Status
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store import migrate
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.migrate import MigrationError, apply_migrations, load_migrations
from scheduler.store.ports import LogEntry, MessageContent, Schedule, StatusUpdate
from scheduler.topics import Topics

pytestmark = pytest.mark.integration

EXPECTED_TABLES = {
    "owners",
    "control_keys",
    "control_keys_by_owner",
    "applications",
    "applications_by_owner",
    "data_keys",
    "data_keys_by_app",
    "messages",
    "messages_by_app",
    "app_message_days",
    "message_logs",
    "due_by_bucket",
    "bucket_partitions",
    "release_watermark",
    "usage_daily",
    "usage_pending",  # 0002: the per-app pending count (pending cap)
    "pending_by_bucket",  # 0003: approximate stored counts (pending-by-horizon gauge)
    "pending_by_day",
    "stored_buckets",  # 0004: the index of non-empty buckets
    "stored_days",
    "idempotency_keys",  # 0005: idempotency key claims
    "schedules",  # 0006: recurring schedules
    "schedule_changes",  # 0009: the schedules changed lately (the occurrence runner)
    "released_buckets",  # 0010: when each bucket was released (readers derive QUEUED)
    "schema_migrations",
}


def test_setup_creates_everything_and_second_run_changes_nothing(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> None:
    first = setup(kafka_settings, cassandra_settings, scheduling_settings)
    specs = Topics(kafka_settings, scheduling_settings).specs()
    assert len(specs) == 6 + scheduling_settings.ring_size
    assert {f"created topic {spec.name}" for spec in specs} <= set(first)
    assert f"created keyspace {cassandra_settings.keyspace}" in " ".join(first)
    for migration in (
        "0001_initial",
        "0002_usage_pending",
        "0003_pending_counts",
        "0004_bucket_index",
        "0005_idempotency_keys",
        "0006_schedules",
    ):
        assert f"applied migration {migration}" in first
    assert "bucket index complete (new keyspace)" in first

    assert setup(kafka_settings, cassandra_settings, scheduling_settings) == []

    admin = AdminClient(kafka_settings.client_config())
    topics = admin.list_topics(timeout=10).topics
    for spec in specs:
        assert len(topics[spec.name].partitions) == spec.partitions
    results = Topics(kafka_settings, scheduling_settings).results
    resource = ConfigResource(ConfigResource.Type.TOPIC, results)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact,delete"
    assert config["retention.ms"].value == str(kafka_settings.results_retention_ms)

    rows = cassandra_session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
        (cassandra_settings.keyspace,),
    )
    assert {row.table_name for row in rows} == EXPECTED_TABLES


def test_setup_restores_a_drifted_topic_config(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
) -> None:
    setup(kafka_settings, cassandra_settings, scheduling_settings)
    drifted = kafka_settings.model_copy(update={"requests_retention_ms": 2 * 3_600_000})
    changes = setup(drifted, cassandra_settings, scheduling_settings)
    assert changes == [
        f"set {kafka_settings.topic_prefix}requests retention.ms=7200000",
        f"set {kafka_settings.topic_prefix}commands retention.ms=7200000",
    ]
    assert setup(drifted, cassandra_settings, scheduling_settings) == []


def test_setup_bounds_the_results_topic_of_a_previous_release(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
) -> None:
    """The previous release created the results topic compact-only (unbounded: one result per
    message forever); setup on upgrade adds time retention to it in place."""
    setup(kafka_settings, cassandra_settings, scheduling_settings)
    admin = AdminClient(kafka_settings.client_config())
    results = Topics(kafka_settings, scheduling_settings).results
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        results,
        incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", "", incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result()

    changes = setup(kafka_settings, cassandra_settings, scheduling_settings)
    assert f"set {results} cleanup.policy=compact,delete" in changes
    config = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, results)])
    [described] = config.values()
    values = described.result()
    assert values["cleanup.policy"].value == "compact,delete"
    assert values["retention.ms"].value == str(kafka_settings.results_retention_ms)


IDEMPOTENCY_KEYS_MIGRATION = 5


def test_setup_adds_the_idempotency_keys_table_to_a_keyspace_of_the_previous_release(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> None:
    """A keyspace of the previous release (migrations 0001-0004, a keyed message recorded by
    its ingest, which did not claim keys): `scheduler setup` adds `idempotency_keys` in place,
    keeps what is stored, and the recorded message still holds its key."""
    apply_migrations(cassandra_session, cassandra_settings, 1, up_to=IDEMPOTENCY_KEYS_MIGRATION - 1)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    assert "idempotency_keys" not in _tables(cassandra_session, cassandra_settings)
    cassandra_session.execute(
        "INSERT INTO messages (app_id, message_id, payload_json, send_at_ms, created_ms,"
        " idempotency_key, source, status, generation, attempt, due_ms, updated_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            "app-old",
            "01JOLDMESSAGE0000000000000",
            '{"n":1}',
            2_000_000_000_000,
            1_900_000_000_000,
            "order-1",
            "http",
            "READY",
            0,
            1,
            2_000_000_000_000,
            1_900_000_000_000,
        ),
    )

    changes = setup(kafka_settings, cassandra_settings, scheduling_settings)
    assert "applied migration 0005_idempotency_keys" in changes
    assert [c for c in changes if c.startswith("applied migration")] == [
        "applied migration 0005_idempotency_keys",
        "applied migration 0006_schedules",  # and the migrations after it
        "applied migration 0007_delivery_policy",
        "applied migration 0008_schedule_window",
        "applied migration 0009_schedule_changes",
        "applied migration 0010_released_buckets",
        "applied migration 0011_log_in_record",
    ]
    assert "idempotency_keys" in _tables(cassandra_session, cassandra_settings)
    assert setup(kafka_settings, cassandra_settings, scheduling_settings) == []

    messages = CassandraMessageStore(cassandra_session)
    old = messages.get("app-old", "01JOLDMESSAGE0000000000000")
    assert old is not None and old.state.status is Status.READY  # kept as it was
    ttl = claim_ttl_ms(kafka_settings.requests_retention_ms)
    recorded = KeyClaim("app-old", "order-1", "01JOLDMESSAGE0000000000000", "other", 1)
    [holder] = messages.claim_keys([recorded], ttl)
    assert not holder.won and holder.status is Status.READY  # the record holds its key
    fresh = KeyClaim("app-old", "order-2", "01JNEWMESSAGE0000000000000", "f", 1)
    assert [h.won for h in messages.claim_keys([fresh, fresh], ttl)] == [True, False]
    row = cassandra_session.execute(
        "SELECT TTL(message_id) AS ttl FROM idempotency_keys"
        " WHERE app_id = 'app-old' AND idempotency_key = 'order-2'"
    ).one()
    assert ttl // 1000 - 60 < row.ttl <= ttl // 1000  # seconds left, tied to the retention
    messages.save(
        MessageContent("app-old", "01JNEWMESSAGE0000000000000", "1", 2, 1, "order-2"),
        StatusUpdate(Status.READY, 0, 1, 2, 1),
        LogEntry(1, "0:1:scheduled", Status.READY),
    )


SCHEDULES_MIGRATION = 6


def test_setup_adds_the_schedules_table_to_a_keyspace_of_the_previous_release(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> None:
    """A keyspace of the previous release (migrations 0001-0005, a message stored by it):
    `scheduler setup` adds `schedules` and nothing else, keeps what is stored, and the table
    takes schedules. Services of the previous release never read it (a rollback ignores it)."""
    apply_migrations(cassandra_session, cassandra_settings, 1, up_to=SCHEDULES_MIGRATION - 1)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    _old_message(cassandra_session, "app-old", "01JOLDMESSAGE0000000000001")
    assert "schedules" not in _tables(cassandra_session, cassandra_settings)

    changes = setup(kafka_settings, cassandra_settings, scheduling_settings)
    assert [c for c in changes if c.startswith("applied migration")] == [
        "applied migration 0006_schedules",
        "applied migration 0007_delivery_policy",
        "applied migration 0008_schedule_window",
        "applied migration 0009_schedule_changes",
        "applied migration 0010_released_buckets",
        "applied migration 0011_log_in_record",
    ]
    assert "schedules" in _tables(cassandra_session, cassandra_settings)
    old = CassandraMessageStore(cassandra_session).get("app-old", "01JOLDMESSAGE0000000000001")
    assert old is not None and old.state.status is Status.READY  # kept as it was
    schedules = CassandraScheduleStore(cassandra_session)
    daily = Schedule("app-old", "s1", Recurrence("@daily", "Europe/Berlin"), "{}", 1, 1)
    schedules.put(daily)
    assert schedules.get("app-old", "s1") == daily


DELIVERY_POLICY_MIGRATION = 7


def test_setup_adds_the_delivery_policy_columns_and_keeps_the_previous_releases_apps(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> None:
    """A keyspace of the previous release (0001-0006) with an application written by it:
    `scheduler setup` adds the policy columns in place; the app reads with no policy, not
    paused, no failure destination. An app written by the new release and then updated by an
    old ingest (its INSERT names only the columns it knows) keeps its policy and its pause:
    both directions of a rolling upgrade."""
    apply_migrations(cassandra_session, cassandra_settings, 1, up_to=DELIVERY_POLICY_MIGRATION - 1)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    old_insert = (
        "INSERT INTO applications (app_id, owner_id, name, type, endpoint, signing_secret,"
        " created_ms, updated_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    cassandra_session.execute(
        old_insert, ("app-old", "o", "old", "REST", "https://example.com/a", "whsec_x", 1, 1)
    )

    changes = setup(kafka_settings, cassandra_settings, scheduling_settings)
    assert [c for c in changes if c.startswith("applied migration")] == [
        "applied migration 0007_delivery_policy",
        "applied migration 0008_schedule_window",
        "applied migration 0009_schedule_changes",
        "applied migration 0010_released_buckets",
        "applied migration 0011_log_in_record",
    ]
    apps = CassandraAppStore(cassandra_session)
    old = apps.get_app("app-old")
    assert old is not None and old.name == "old"
    assert (old.policy, old.deliveries_paused, old.failure_type) == (DEFAULT_POLICY, False, None)

    shaped = dataclasses.replace(
        old,
        app_id="app-new",
        policy=DeliveryPolicy(max_attempts=2, rate_per_second=5.0),
        failure_type="REST",
        failure_endpoint="https://example.com/failed",
    )
    apps.put_app(shaped)
    apps.set_deliveries_paused("app-new", True, 10)
    cassandra_session.execute(  # an old ingest renames it
        old_insert, ("app-new", "o", "renamed", "REST", "https://example.com/a", "whsec_x", 1, 2)
    )
    after = apps.get_app("app-new")
    assert after is not None and after.name == "renamed"
    assert after.policy == shaped.policy and after.deliveries_paused is True
    assert after.failure_endpoint == "https://example.com/failed"


LOG_IN_RECORD_MIGRATION = 11


def test_setup_moves_new_log_entries_into_the_record_and_keeps_the_old_ones_readable(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> None:
    """A keyspace of the previous release (0001-0010) with a message and its log rows written
    by it: `scheduler setup` adds `messages.log_entries`; the new adapter writes the next
    entry into the record only (no `message_logs` row), and reads both: the old entries, the
    new one, in order. An entry an old writer replays into `message_logs` counts once."""
    apply_migrations(cassandra_session, cassandra_settings, 1, up_to=LOG_IN_RECORD_MIGRATION - 1)
    cassandra_session.set_keyspace(cassandra_settings.keyspace)
    message_id = "01JOLDMESSAGE0000000000002"
    _old_message(cassandra_session, "app-old", message_id)

    changes = setup(kafka_settings, cassandra_settings, scheduling_settings)
    assert [c for c in changes if c.startswith("applied migration")] == [
        "applied migration 0011_log_in_record"
    ]
    messages = CassandraMessageStore(cassandra_session)
    sent = LogEntry(5, "0:1:sent", Status.SENT, {"attempt": 1, "lateness_ms": 3})
    messages.update_status(
        "app-old", message_id, StatusUpdate(Status.SENT, 0, 1, 2, 5, lateness_ms=3), sent
    )
    old_rows = cassandra_session.execute(
        "SELECT entry_id FROM message_logs WHERE app_id = 'app-old' AND message_id = %s",
        (message_id,),
    )
    assert [r.entry_id for r in old_rows] == ["0:1:scheduled"]  # nothing new written there
    _old_log_row(cassandra_session, "app-old", message_id, 5, "0:1:sent", "SENT")  # a replay
    entries = messages.logs("app-old", message_id)
    assert [(e.at_ms, e.entry_id, e.status) for e in entries] == [
        (1, "0:1:scheduled", Status.READY),
        (5, "0:1:sent", Status.SENT),
    ]
    assert entries[1].data == {"attempt": 1, "lateness_ms": 3}
    view = messages.get("app-old", message_id)
    assert view is not None and view.state.status is Status.SENT


def _old_message(session: Session, app_id: str, message_id: str) -> None:
    """A READY message with its "scheduled" log row, as the releases before 0011 wrote it."""
    session.execute(
        "INSERT INTO messages (app_id, message_id, payload_json, send_at_ms, created_ms, source)"
        " VALUES (%s, %s, '1', 2, 1, 'http')",
        (app_id, message_id),
    )
    session.execute(
        "UPDATE messages USING TIMESTAMP 2 SET status = 'READY', generation = 0, attempt = 1,"
        " due_ms = 2, updated_ms = 1 WHERE app_id = %s AND message_id = %s",
        (app_id, message_id),
    )
    _old_log_row(session, app_id, message_id, 1, "0:1:scheduled", "READY")


def _old_log_row(
    session: Session, app_id: str, message_id: str, at_ms: int, entry_id: str, status: str
) -> None:
    session.execute(
        "INSERT INTO message_logs (app_id, message_id, at_ms, entry_id, status, data)"
        " VALUES (%s, %s, %s, %s, %s, '{}')",
        (app_id, message_id, at_ms, entry_id, status),
    )


def _tables(session: Session, settings: CassandraSettings) -> set[str]:
    rows = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
        (settings.keyspace,),
    )
    return {row.table_name for row in rows}


def test_a_changed_applied_migration_is_refused(
    cassandra_settings: CassandraSettings,
    cassandra_session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert apply_migrations(cassandra_session, cassandra_settings, 1) != []
    original = load_migrations()
    tampered = [m.__class__(m.version, m.name, m.statements, "0" * 64) for m in original]
    monkeypatch.setattr(migrate, "load_migrations", lambda: tampered)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(cassandra_session, cassandra_settings, 2)
