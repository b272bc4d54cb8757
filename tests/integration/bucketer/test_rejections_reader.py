"""A Kafka-native producer learns which of its requests the bucketer refused: SchedulerProducer
writes, the real bucketer consumes and rejects to the rejected topic, RejectionsReader returns
the rejections of the producer's own apps (and only those)."""

from __future__ import annotations

import pytest

from scheduler.producer import RejectionsReader, SchedulerProducer
from scheduler.records import RejectedRequest

from .support import APP_ID, CLOCK, Stack, wait_until

pytestmark = pytest.mark.integration


def test_the_reader_returns_the_rejections_of_its_apps(stack: Stack) -> None:
    mine = RejectionsReader(stack.kafka, stack.scheduling, app_ids={APP_ID, "app-nope"})
    producer = SchedulerProducer(stack.kafka, stack.scheduling)
    due = CLOCK.now_ms() + 3_600_000
    try:
        accepted = producer.schedule(APP_ID, {"n": 1}, due)
        unknown = producer.schedule("app-nope", {"n": 2}, due)
        deleted_elsewhere = producer.schedule("app-deleted", {"n": 3}, due)  # not my app
        producer.flush()
        found: list[RejectedRequest] = []
        with stack.bucketer_thread():
            wait_until(lambda: found.extend(mine.poll(0.5)) or bool(found), 60, "a rejection")
            wait_until(lambda: accepted in stack.stored_ids(), 30, "the valid request stored")
            found += mine.poll(1.0)  # anything else would have arrived by now
        assert [(r.message_id, r.app_id, r.reason) for r in found] == [
            (unknown, "app-nope", "unknown_app")
        ]
        assert found[0].source_topic == stack.topics.requests
        # the other app's rejection was written too: a reader of that app sees it
        theirs = RejectionsReader(
            stack.kafka, stack.scheduling, app_ids={"app-deleted"}, since_ms=0
        )
        try:
            [rejected] = theirs.poll(5.0)
            assert (rejected.message_id, rejected.reason) == (deleted_elsewhere, "app_deleted")
        finally:
            theirs.close()
    finally:
        producer.close()
        mine.close()
