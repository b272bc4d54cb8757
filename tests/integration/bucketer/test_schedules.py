"""Kafka-native recurring schedules on the real stack: SchedulerProducer writes ScheduleDefinition
records to the requests topic, the real bucketer stores them in Cassandra's `schedules` table,
and a delete aborts the occurrences created ahead with ABORT commands on the commands topic."""

from __future__ import annotations

import pytest

from scheduler.producer import RejectionsReader, SchedulerProducer
from scheduler.records import CommandKind
from scheduler.store.cassandra_schedules import CassandraScheduleStore
from scheduler.store.ports import Schedule

from .support import APP_ID, COMMANDS, Stack, wait_until

pytestmark = pytest.mark.integration
HOUR = 3_600_000


def test_a_schedule_put_then_deleted_through_kafka(stack: Stack) -> None:
    store = CassandraScheduleStore(stack.session)
    rejections = RejectionsReader(stack.kafka, stack.scheduling, app_ids={APP_ID, "app-nope"})
    producer = SchedulerProducer(stack.kafka, stack.scheduling)
    try:
        schedule_id = producer.put_schedule(
            APP_ID, "rate(1 hour)", {"report": "hourly"}, timezone="Europe/Berlin", kafka_key="r"
        )
        unknown = producer.put_schedule("app-nope", "@daily", {"n": 1})
        producer.flush()

        def stored() -> Schedule | None:
            return store.get(APP_ID, schedule_id)

        with stack.bucketer_thread() as metrics:
            wait_until(lambda: stored() is not None, 60, "the schedule in Cassandra")
            s = stored()
            assert s is not None
            assert (s.recurrence.expression, s.recurrence.timezone) == (
                "rate(1 hour)",
                "Europe/Berlin",
            )
            assert (s.payload_json, s.kafka_key, s.paused, s.deleted_ms) == (
                '{"report":"hourly"}',
                "r",
                False,
                None,
            )
            assert s.created_ms == s.updated_ms == s.cursor_ms == s.recurrence.start_ms

            # The runner created the next three hourly occurrences ahead: the delete aborts them.
            store.advance_cursor(APP_ID, schedule_id, s.created_ms + 3 * HOUR)
            producer.delete_schedule(APP_ID, schedule_id)
            producer.flush()
            wait_until(lambda: (stored() or s).deleted_ms is not None, 30, "the schedule deleted")
            wait_until(stack.committed_everything, 30, "offsets committed")

        commands = [COMMANDS.decode(v) for v in stack.read_topics([stack.topics.commands], 3)]
        assert [(c.kind, c.app_id) for c in commands] == [(CommandKind.ABORT, APP_ID)] * 3
        assert list(store.list(APP_ID, None, 10).items) == []
        [refused] = rejections.poll(5.0)
        assert (refused.reason, refused.app_id, refused.message_id) == (
            "unknown_app",
            "app-nope",
            unknown,
        )
        for operation, outcome in (("PUT", "created"), ("DELETE", "applied"), ("PUT", "rejected")):
            counted = metrics.schedule_definitions.labels(operation, outcome)._value.get()
            assert counted == 1, (operation, outcome)
    finally:
        producer.close()
        rejections.close()
