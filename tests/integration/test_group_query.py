"""scheduler.kafka.groups against the real broker: the child process answers with the members
of the groups asked about (client id and host), and with no members for an unknown group."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from scheduler.kafka.groups import describe_groups_in_child
from scheduler.settings import KafkaSettings

pytestmark = [pytest.mark.integration]


def test_the_child_names_the_members_of_each_group(kafka_settings: KafkaSettings) -> None:
    group, absent = f"group-query-{uuid.uuid4().hex[:8]}", f"absent-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            **kafka_settings.client_config(),
            "group.id": group,
            "client.id": "scheduler-bucketer.bucket-index",
        }
    )
    topic = kafka_settings.topic_prefix + "group-query"
    admin = AdminClient(kafka_settings.client_config())
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        members = describe_groups_in_child(kafka_settings, [group, absent])
        while not members[group] and time.monotonic() < deadline:
            consumer.poll(0.5)  # joins the group
            members = describe_groups_in_child(kafka_settings, [group, absent])
        [member] = members[group]
        assert member.client_id == "scheduler-bucketer.bucket-index"
        assert "127.0.0.1" in member.host
        assert members[absent] == []
    finally:
        consumer.close()
