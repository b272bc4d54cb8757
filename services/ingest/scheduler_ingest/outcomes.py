"""What the dispatcher did with an attempt, read from its own results (for an uncertain abort).

An abort whose command Kafka acknowledged at or before due - G certainly wins: the dispatcher
fires only with a commands view fresh as of due - G. A later ack may have lost the race, and the
Cassandra record cannot tell (the record writer writes SENT after the fact), so the abort route
asks the results topic instead: the dispatcher's settled result of that very attempt, written
in the same transaction as the delivery.

`KafkaResultLookup` runs only for aborts in that uncertain zone, which are rare: each lookup is
one short-lived read_committed consumer (a connection, a metadata and an offsets request, then
fetches of every results partition from a little before due - G) polled on a worker thread until
the result shows up or the deadline passes. At most `MAX_LOOKUPS` run at once per replica; the
others queue, and one whose deadline passed meanwhile answers "unconfirmed" at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Protocol

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from scheduler.clock import Clock
from scheduler.codec import DecodeError, RecordCodec
from scheduler.records import DeliveryOutcome, DeliveryResult
from scheduler.settings import KafkaSettings

log = logging.getLogger("scheduler_ingest.outcomes")

MAX_LOOKUPS = 4  # concurrent lookups (worker threads, consumers) per replica
POLL_S = 0.1
# Skip reasons (the dispatcher's Verdict values, scheduler_releaser/dispatcher/verdict.py) after
# which the attempt was not delivered and no later copy of that generation will be: the command
# (or the ABORTED record, or the app's tombstone) is there for every later attempt too.
NOT_DELIVERED_SKIPS = frozenset({"aborted", "app_deleted", "app_missing"})


class AbortOutcome(Enum):
    """How an abort was answered (the metric's label)."""

    CERTAIN = "certain"  # command acknowledged by due - G: 200 without asking
    CONFIRMED_NOT_DELIVERED = "confirmed_not_delivered"  # the result says skipped: 200
    TOO_LATE_DELIVERED = "too_late_delivered"  # the result says attempted: 409
    UNCONFIRMED = "unconfirmed"  # no result by the deadline: 409


def decisive(result: DeliveryResult) -> bool:
    """Does this result settle the question? A SKIPPED "stale" or "done" copy does not: the
    attempt that decides is another one."""
    return result.outcome is not DeliveryOutcome.SKIPPED or result.error in NOT_DELIVERED_SKIPS


def not_delivered(result: DeliveryResult) -> bool:
    """True only when the attempt was skipped for good. SENT was delivered; RETRY and FAILED
    were attempted (the receiver may have received the request, e.g. before a 5xx or a
    timeout), so they are no abort either, even though the abort stops any later attempt."""
    return result.outcome is DeliveryOutcome.SKIPPED and result.error in NOT_DELIVERED_SKIPS


class ResultLookup(Protocol):
    async def find(
        self,
        app_id: str,
        message_id: str,
        generation: int,
        attempt: int,
        since_ms: int,
        deadline_ms: int,
    ) -> DeliveryResult | None:
        """The first decisive result of (app, message, generation, attempt) committed to the
        results topic at or after `since_ms`, or None if none was read by `deadline_ms`. The app
        is part of the identity: message ids are unique within an application only."""

    def close(self) -> None:
        """Release the worker threads."""


class NoResultLookup:
    """No results topic to ask (an app built without one): every uncertain abort is answered
    "could not be confirmed"."""

    async def find(
        self,
        app_id: str,
        message_id: str,
        generation: int,
        attempt: int,
        since_ms: int,
        deadline_ms: int,
    ) -> DeliveryResult | None:
        return None

    def close(self) -> None:
        pass


class KafkaResultLookup:
    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        codec: RecordCodec[DeliveryResult],
        clock: Clock,
        max_lookups: int = MAX_LOOKUPS,
    ) -> None:
        self._config = {
            **kafka.client_config(),
            # assign() only: the group is never joined and nothing is committed.
            "group.id": f"{kafka.topic_prefix}ingest-abort-outcomes",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",  # only results whose transaction committed
            "logger": log,
        }
        self._topic = topic
        self._codec = codec
        self._clock = clock
        self._max_lookups = max_lookups
        # Made on first use, dropped at shutdown (an app whose lifespan runs again gets a new one).
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def find(
        self,
        app_id: str,
        message_id: str,
        generation: int,
        attempt: int,
        since_ms: int,
        deadline_ms: int,
    ) -> DeliveryResult | None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_lookups, "abort-outcome")
            pool = self._pool
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            pool, self._find, app_id, message_id, generation, attempt, since_ms, deadline_ms
        )

    def close(self) -> None:
        # No wait: a lookup in progress ends by its deadline (seconds) on its own.
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _left_s(self, deadline_ms: int) -> float:
        return max(0.0, (deadline_ms - self._clock.now_ms()) / 1000.0)

    def _find(
        self,
        app_id: str,
        message_id: str,
        generation: int,
        attempt: int,
        since_ms: int,
        deadline_ms: int,
    ) -> DeliveryResult | None:
        if self._left_s(deadline_ms) <= 0:
            return None
        key = message_id.encode()
        consumer = Consumer(self._config)
        try:
            consumer.assign(self._start(consumer, since_ms, deadline_ms))
            while (left := self._left_s(deadline_ms)) > 0:
                msg = consumer.poll(min(POLL_S, left))
                if msg is None or msg.error() is not None or msg.key() != key:
                    continue
                try:
                    result = self._codec.decode(msg.value() or b"")
                except DecodeError:
                    continue
                attempt_of = (result.app_id, result.generation, result.attempt)
                if attempt_of == (app_id, generation, attempt) and decisive(result):
                    return result
            return None
        except KafkaException as exc:
            log.warning("results lookup of %s failed: %s", message_id, exc)
            return None
        finally:
            consumer.close()

    def _start(self, consumer: Consumer, since_ms: int, deadline_ms: int) -> list[TopicPartition]:
        """Every results partition, from its first record at or after `since_ms`, else from its
        end. The end is asked first: a result appended between the two requests then lies at
        or after it (asked second, it could fall before the start and be missed)."""
        topic = self._topic
        metadata = consumer.list_topics(topic, timeout=self._left_s(deadline_ms))
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {
            tp.partition: tp.offset
            for tp in consumer.offsets_for_times(
                [TopicPartition(topic, p, OFFSET_END) for p in partitions],
                self._left_s(deadline_ms),
            )
        }
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], self._left_s(deadline_ms)
        )
        return [
            TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else ends[tp.partition])
            for tp in found
        ]
