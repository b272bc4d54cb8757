"""The real results lookup of an uncertain abort (scheduler_ingest/outcomes.py) against Kafka:
it finds the dispatcher's committed result of one attempt, and nothing else.

Results are produced like the dispatcher produces them: in Kafka transactions, key = message
id, value = Avro DeliveryResult. A private topic set per test (tests/fixtures.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from scheduler.clock import SystemClock
from scheduler.codec import RecordCodec
from scheduler.kafka.admin import ensure_topics
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics
from scheduler_ingest.outcomes import KafkaResultLookup

pytestmark = pytest.mark.integration

CLOCK = SystemClock()
CODEC = RecordCodec(DeliveryResult)
MESSAGE = "01KABORTTRUTH0000000000000"
OTHER = "01KABORTTRUTH0000000000001"


@pytest.fixture
def results_topic(
    kafka_settings: KafkaSettings, scheduling_settings: SchedulingSettings
) -> Iterator[tuple[KafkaSettings, str]]:
    # Three partitions: the lookup must read all of them (it does not know the partitioner).
    kafka = kafka_settings.model_copy(update={"results_partitions": 3})
    topics = Topics(kafka, scheduling_settings)
    ensure_topics(
        AdminClient(kafka.client_config()),
        [s for s in topics.specs() if s.name == topics.results],
        kafka,
    )
    yield kafka, topics.results


def _result(
    message_id: str,
    outcome: DeliveryOutcome,
    generation: int = 0,
    attempt: int = 1,
    error: str | None = None,
    app_id: str = "app-it",
) -> DeliveryResult:
    now = CLOCK.now_ms()
    return DeliveryResult(
        message_id=message_id,
        app_id=app_id,
        generation=generation,
        attempt=attempt,
        outcome=outcome,
        due_ms=now,
        finished_ms=now,
        lateness_ms=0,
        error=error,
    )


class Dispatcherish:
    """A transactional producer of results, as the dispatcher's sink is."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._topic = topic
        self._producer = Producer(
            {**kafka.client_config(), "transactional.id": f"{kafka.topic_prefix}it-results"}
        )
        self._producer.init_transactions(30)

    def emit(
        self, results: list[DeliveryResult], commit: bool = True, timestamp_ms: int = 0
    ) -> None:
        self._producer.begin_transaction()
        for r in results:
            self._producer.produce(
                self._topic,
                key=r.message_id.encode(),
                value=CODEC.encode(r),
                timestamp=timestamp_ms,
            )
        if commit:
            self._producer.commit_transaction(30)
        else:
            self._producer.abort_transaction(30)


def _find(
    lookup: KafkaResultLookup, since_ms: int, deadline_ms: int, generation: int = 0
) -> DeliveryResult | None:
    return asyncio.run(lookup.find("app-it", MESSAGE, generation, 1, since_ms, deadline_ms))


def test_it_finds_the_attempts_committed_result_and_ignores_the_rest(
    results_topic: tuple[KafkaSettings, str],
) -> None:
    kafka, topic = results_topic
    out = Dispatcherish(kafka, topic)
    lookup = KafkaResultLookup(kafka, topic, CODEC, CLOCK)
    since = CLOCK.now_ms()
    # Before `since`: not this abort's business (the lookup starts after it).
    out.emit([_result(MESSAGE, DeliveryOutcome.SENT)], timestamp_ms=since - 60_000)
    out.emit(
        [
            _result(OTHER, DeliveryOutcome.SENT),  # another message
            _result(MESSAGE, DeliveryOutcome.SENT, generation=1),  # another generation
            _result(MESSAGE, DeliveryOutcome.SENT, attempt=2),  # another attempt
            _result(MESSAGE, DeliveryOutcome.SKIPPED, error="stale"),  # not decisive
            # another app's message with the same id (ids are unique per app only)
            _result(MESSAGE, DeliveryOutcome.SENT, app_id="app-other"),
        ]
    )
    out.emit([_result(MESSAGE, DeliveryOutcome.SENT)], commit=False)  # aborted transaction
    # The deciding result arrives while the lookup is already polling.
    later = threading.Timer(
        1.5,
        out.emit,
        [[_result(MESSAGE, DeliveryOutcome.SKIPPED, error="aborted")]],
    )
    later.start()
    try:
        started = time.monotonic()
        found = _find(lookup, since, CLOCK.now_ms() + 15_000)
        elapsed = time.monotonic() - started
    finally:
        later.join()
        lookup.close()
    assert found is not None
    assert (found.app_id, found.message_id, found.generation, found.attempt) == (
        "app-it",
        MESSAGE,
        0,
        1,
    )
    assert (found.outcome, found.error) == (DeliveryOutcome.SKIPPED, "aborted")
    assert 1.4 <= elapsed < 10, elapsed  # waited for it, did not wait for the deadline


def test_it_finds_a_result_committed_before_it_started(
    results_topic: tuple[KafkaSettings, str],
) -> None:
    kafka, topic = results_topic
    out = Dispatcherish(kafka, topic)
    lookup = KafkaResultLookup(kafka, topic, CODEC, CLOCK)
    since = CLOCK.now_ms() - 1_000
    out.emit([_result(OTHER, DeliveryOutcome.SKIPPED, error="aborted")])
    out.emit([_result(MESSAGE, DeliveryOutcome.SENT)])
    try:
        found = _find(lookup, since, CLOCK.now_ms() + 15_000)
    finally:
        lookup.close()
    assert found is not None and found.outcome is DeliveryOutcome.SENT


def test_without_its_result_it_gives_up_at_the_deadline(
    results_topic: tuple[KafkaSettings, str],
) -> None:
    kafka, topic = results_topic
    out = Dispatcherish(kafka, topic)
    lookup = KafkaResultLookup(kafka, topic, CODEC, CLOCK)
    out.emit(
        [
            _result(MESSAGE, DeliveryOutcome.SENT, generation=1),
            _result(OTHER, DeliveryOutcome.SENT),
        ]
    )
    try:
        started = CLOCK.now_ms()
        found = _find(lookup, started - 1_000, started + 2_000)
        ended = CLOCK.now_ms()
        # A deadline already past: no consumer, no wait.
        assert _find(lookup, started - 1_000, ended - 1) is None
        assert CLOCK.now_ms() - ended < 500
    finally:
        lookup.close()
    assert found is None
    assert started + 2_000 <= ended < started + 4_000, ended - started
