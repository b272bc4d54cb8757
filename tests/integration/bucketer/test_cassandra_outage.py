"""Cassandra unreachable for a while: no commit, retries with backoff, no loss once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from scheduler.settings import CassandraSettings
from scheduler.testing.proxy import CuttableProxy

from .support import CLOCK, Stack, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def proxy(cassandra_settings: CassandraSettings) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(cassandra_settings.contact_points[0], cassandra_settings.port)
    yield proxy
    proxy.close()


def test_outage_stops_commits_and_resumes_without_loss(stack: Stack, proxy: CuttableProxy) -> None:
    via_proxy = stack.cassandra.model_copy(update={"port": proxy.port, "request_timeout_s": 2.0})
    now = CLOCK.now_ms()
    before = [stack.request(now + 3_600_000 + i) for i in range(50)]
    during = [stack.request(now + 3_600_000 + i) for i in range(50)]
    stack.produce_requests(before)

    with stack.bucketer_thread(
        cassandra=via_proxy, retry_initial_ms=100, retry_max_ms=1_000
    ) as metrics:
        wait_until(lambda: len(stack.stored_ids()) == 50, 60, "the first 50 stored")
        wait_until(stack.committed_everything, 30, "the first offsets committed")

        proxy.cut()
        stack.produce_requests(during)
        wait_until(
            lambda: (metrics.retries.labels("cassandra")._value.get() or 0) >= 2,
            60,
            "at least two failed attempts while Cassandra is unreachable",
        )
        time.sleep(1.0)
        assert not stack.committed_everything(), "offsets were committed during the outage"
        assert len(stack.stored_ids()) == 50

        proxy.restore()
        wait_until(lambda: len(stack.stored_ids()) == 100, 90, "all 100 stored after the outage")
        wait_until(stack.committed_everything, 30, "every offset committed after the outage")

    assert sorted(stack.stored_ids()) == sorted(r.message_id for r in before + during)
