from __future__ import annotations

import pytest
from cassandra.cluster import Session

from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings

from .support import Stack, make_stack


@pytest.fixture
def stack(
    kafka_settings: KafkaSettings,
    cassandra_settings: CassandraSettings,
    scheduling_settings: SchedulingSettings,
    cassandra_session: Session,
) -> Stack:
    return make_stack(kafka_settings, cassandra_settings, scheduling_settings, cassandra_session)
