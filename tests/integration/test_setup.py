"""`scheduler setup` against the real servers: creates everything, and is idempotent."""

from __future__ import annotations

import pytest
from cassandra.cluster import Session
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource

from scheduler.cli import setup
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store import migrate
from scheduler.store.migrate import MigrationError, apply_migrations, load_migrations
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
