"""The pending cap for Kafka-native requests, on the real stack: over the cap a request goes to
the rejected topic with reason pending_limit_exceeded; the accepted ones are counted."""

from __future__ import annotations

import pytest

from scheduler.store.usage import CassandraUsageStore, usage_day

from .support import APP_ID, CLOCK, Stack, wait_until

pytestmark = pytest.mark.integration

CAP = 3


def test_kafka_native_requests_over_the_cap_are_rejected_and_the_rest_counted(
    stack: Stack,
) -> None:
    now = CLOCK.now_ms()
    requests = [stack.request(now + 3_600_000 + i) for i in range(CAP + 2)]
    stack.produce_requests(requests)

    with stack.bucketer_thread(max_pending_per_app=CAP) as metrics:
        rejected = stack.rejections(expected=2)
        wait_until(lambda: len(stack.stored_ids()) == CAP, 60, f"{CAP} stored rows")
        wait_until(stack.committed_everything, 30, "offsets committed")

    # One partition (key = app id): the first CAP in offset order are admitted.
    assert sorted(stack.stored_ids()) == sorted(r.message_id for r in requests[:CAP])
    assert sorted(r.message_id for r in rejected) == sorted(r.message_id for r in requests[CAP:])
    assert {(r.reason, r.app_id) for r in rejected} == {("pending_limit_exceeded", APP_ID)}
    for request in requests[CAP:]:
        assert stack.messages.get(APP_ID, request.message_id) is None
    usage = CassandraUsageStore(stack.session)
    assert usage.pending(APP_ID) == CAP
    [day] = usage.read(APP_ID, usage_day(now), usage_day(now) + 1)
    assert day.ingested == CAP
    counted = {
        sample.labels["reason"]: sample.value
        for family in metrics.rejected.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"pending_limit_exceeded": 2.0}
