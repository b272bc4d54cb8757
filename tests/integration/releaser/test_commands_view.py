"""The dispatcher's commands view on the real broker, wired as the dispatcher wires it."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from scheduler.clock import SystemClock
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from scheduler_releaser.codecs import Codecs
from scheduler_releaser.dispatcher.commands import CommandView
from scheduler_releaser.dispatcher.runtime import commands_feed
from tests.support.workload import create_topic

from .test_dispatch import SETTINGS

pytestmark = pytest.mark.integration


def test_a_confirmation_is_not_queued_behind_the_reader_s_long_polled_fetch(
    kafka_settings: KafkaSettings, scheduling_settings: SchedulingSettings
) -> None:
    """The reader long-polls (here with a 2 s fetch wait, to make it plain). A broker answers the
    requests of one connection in order, so while the view asked where each partition ends on
    the reader's own connection, every answer waited for the fetch in flight and the view aged
    by the fetch wait (seen with 100 ms: a lag of 150 ms after each confirmation, beyond a 200 ms
    guard less the KAFKA produce-ahead, and Kafka deliveries stalled). Asked through a client
    of its own, a confirmation takes a round trip."""
    topic = Topics(kafka_settings, scheduling_settings).commands
    create_topic(kafka_settings, topic, partitions=3)
    _wait_for_leaders(kafka_settings, topic, 3)
    clock = SystemClock()
    view = CommandView(clock.now_ms())
    feed = commands_feed(
        kafka_settings,
        scheduling_settings,
        SETTINGS,
        view,
        Codecs.build(kafka_settings),
        clock,
        fetch_wait_ms=2_000,
    )

    async def confirmed_lags() -> list[int]:
        feed.start(clock.now_ms())
        assert await feed.catch_up(20_000)
        lags = []
        for _ in range(10):
            feed.poll()
            await feed.confirm_once()
            feed.poll()
            lags.append(view.lag_ms(clock.now_ms()))
            await asyncio.sleep(0.05)
        return lags

    try:
        lags = asyncio.run(confirmed_lags())
    finally:
        feed.close()
    assert sorted(lags)[len(lags) // 2] < 500, lags


def _wait_for_leaders(kafka: KafkaSettings, topic: str, partitions: int) -> None:
    """A topic just created answers NOT_LEADER_FOR_PARTITION until its leaders are elected."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"{topic}-wait"})
    query = [TopicPartition(topic, p, OFFSET_END) for p in range(partitions)]
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                consumer.offsets_for_times(query, 5)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        consumer.close()
