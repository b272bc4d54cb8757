"""Creating and checking the system's topics (idempotent)."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewTopic

from scheduler.settings import KafkaSettings
from scheduler.topics import TopicSpec


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], kafka: KafkaSettings, timeout_s: float = 30.0
) -> list[str]:
    """Create missing topics, align the configs of existing ones. Returns what changed."""
    existing = admin.list_topics(timeout=timeout_s).topics
    changes: list[str] = []
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=kafka.replication_factor,
                    config=spec.config,
                )
                for spec in missing
            ],
            operation_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                changes.append(f"created topic {name}")
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent setup won
                    raise
    for spec in specs:
        if spec.name not in existing:
            continue
        partitions = len(existing[spec.name].partitions)
        if partitions < spec.partitions:
            changes.append(
                f"WARNING topic {spec.name} has {partitions} partitions, settings ask for "
                f"{spec.partitions}; not increased automatically (it remaps keys)"
            )
        changes += _align_config(admin, spec, timeout_s)
    return changes


def _align_config(admin: AdminClient, spec: TopicSpec, timeout_s: float) -> list[str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    current = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result()
    differing = {
        key: value
        for key, value in spec.config.items()
        if key not in current or current[key].value != value
    }
    if not differing:
        return []
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        spec.name,
        incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in differing.items()
        ],
    )
    admin.incremental_alter_configs([resource], request_timeout=timeout_s)[resource].result()
    return [f"set {spec.name} {key}={value}" for key, value in sorted(differing.items())]
