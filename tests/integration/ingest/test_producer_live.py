"""The Kafka-native producer helper against the real Kafka."""

from __future__ import annotations

import pytest

from scheduler.clock import SystemClock
from scheduler.domain.validation import validate_schedule_request
from scheduler.producer import SchedulerProducer
from scheduler.topics import Topics
from tests.unit.ingest.harness import REQUESTS, SCHEDULING

from .conftest import LiveEnv, read_topic

pytestmark = pytest.mark.integration


def test_scheduled_records_are_on_the_requests_topic(live_env: LiveEnv) -> None:
    clock = SystemClock()
    producer = SchedulerProducer(live_env.kafka, SCHEDULING, clock=clock)
    app_id = f"app-native-{clock.now_ms()}"
    ids = [producer.schedule(app_id, {"i": i}, clock.now_ms() + 60_000) for i in range(5)]
    producer.flush(30)
    producer.close()
    topic = Topics(live_env.kafka, SCHEDULING).requests
    found = [
        REQUESTS.decode(r.value)
        for r in read_topic(live_env.kafka, topic)
        if r.key == app_id.encode()
    ]
    assert [r.message_id for r in found if r.app_id == app_id] == ids  # one partition: in order
    for request in found:
        assert request.source == "kafka"
        validate_schedule_request(request, SCHEDULING)
