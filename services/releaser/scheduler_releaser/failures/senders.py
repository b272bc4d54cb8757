"""Sending one failure notice: an HTTP POST (REST destination) or a Kafka record (KAFKA).

Each attempt ends in an `Attempt`: accepted, retry (transient: 5xx, 408, 429, timeout,
connection, DNS, a broker error of the moment) or drop (final: another 4xx, a redirect, an
address or topic the operator does not allow, a record the topic refuses for good). The
classification is the dispatcher's (dispatcher/verdict.py for HTTP statuses, refusals.py for
Kafka errors), with one difference: a topic missing is retried (within the notice's bounds),
as it may be created after the application named it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from confluent_kafka import KafkaError, Message

from scheduler.clock import Clock
from scheduler.records import DeadLetter
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.http_post import HttpPost, PostFailed, PostTimeout
from scheduler_releaser.dispatcher.outbound import (
    OutboundGuard,
    RefusedDestination,
    UnresolvedDestination,
)
from scheduler_releaser.dispatcher.refusals import refusal_of
from scheduler_releaser.dispatcher.verdict import AttemptKind, classify_status, status_reason

from .notice import http_headers, kafka_headers, notice_body

log = logging.getLogger(__name__)
READ_LIMIT = 1024  # of a receiver's answer: only its status matters


class Verdict(Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    DROP = "drop"


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    reason: str  # metric label: "2xx", "5xx", "timeout", "refused_topic", ...
    detail: str = ""


ACCEPTED = Attempt(Verdict.ACCEPTED, "accepted")


class NoticeSender(Protocol):
    async def send(self, app: Application, letter: DeadLetter, attempt: int) -> Attempt:
        """One attempt to hand the notice of `letter` to `app`'s failure destination."""


class HttpNoticeSender:
    """A signed POST to the failure URL, through the outbound guard (no internal addresses
    unless the operator allows private destinations)."""

    def __init__(self, http: HttpPost, guard: OutboundGuard, clock: Clock) -> None:
        self._http = http
        self._guard = guard
        self._clock = clock

    async def send(self, app: Application, letter: DeadLetter, attempt: int) -> Attempt:
        url = app.failure_endpoint or ""
        try:
            await self._guard.check(url)
        except RefusedDestination as exc:
            return Attempt(Verdict.DROP, "refused_address", str(exc))
        except UnresolvedDestination as exc:
            return Attempt(Verdict.RETRY, "dns", str(exc))
        body = notice_body(letter)
        headers = http_headers(app, letter, body, attempt, self._clock.now_ms())
        try:
            answer = await self._http.post(url, body, headers, READ_LIMIT)
        except PostTimeout as exc:
            return Attempt(Verdict.RETRY, "timeout", str(exc))
        except PostFailed as exc:
            return Attempt(Verdict.RETRY, "connection", str(exc))
        kind = classify_status(answer.status)
        if kind is AttemptKind.SENT:
            return ACCEPTED
        verdict = Verdict.RETRY if kind is AttemptKind.RETRYABLE else Verdict.DROP
        return Attempt(verdict, status_reason(answer.status), f"http {answer.status}")


class NoticeProducer(Protocol):
    """The calls of a confluent-kafka Producer the Kafka sender makes."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        on_delivery: Callable[[KafkaError | None, Message[bytes, bytes]], None] | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...


class KafkaNoticeSender:
    """The notice as a record (key = message id) on the failure topic, acknowledged by the
    brokers (acks=all on the caller's producer). Refused without producing: the scheduler's own
    topics, and topics outside `SCHEDULER_DISPATCH_KAFKA_DESTINATION_PREFIXES` when it is set
    (as dispatcher/core.py refuses a KAFKA delivery)."""

    def __init__(
        self,
        producer: NoticeProducer,
        own_prefix: str,
        allowed_prefixes: Sequence[str],
        timeout_ms: int,
    ) -> None:
        self._producer = producer
        self._own_prefix = own_prefix
        self._allowed = tuple(allowed_prefixes)
        self._timeout_s = timeout_ms / 1000

    def refusal(self, topic: str) -> str | None:
        if topic.startswith(self._own_prefix):
            return f"topic {topic!r} is one of the scheduler's"
        if self._allowed and not topic.startswith(self._allowed):
            return f"topic {topic!r} is outside the allowed prefixes"
        return None

    async def send(self, app: Application, letter: DeadLetter, attempt: int) -> Attempt:
        topic = app.failure_endpoint or ""
        refused = self.refusal(topic)
        if refused is not None:
            return Attempt(Verdict.DROP, "refused_topic", refused)
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[Attempt] = loop.create_future()

        def report(error: KafkaError | None, _msg: object) -> None:
            # Called by whichever thread polls the producer (KafkaPoller): hand it to the loop.
            outcome = ACCEPTED if error is None else _refused(error)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, acked, outcome)

        try:
            self._producer.produce(
                topic,
                value=notice_body(letter),
                key=letter.message_id.encode(),
                headers=kafka_headers(letter),
                on_delivery=report,
            )
        except BufferError as exc:  # the producer's queue is full: a moment of backpressure
            return Attempt(Verdict.RETRY, "queue_full", str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. an invalid topic name: not retried
            return Attempt(Verdict.DROP, "invalid_topic", str(exc))
        try:
            return await asyncio.wait_for(asyncio.shield(acked), self._timeout_s)
        except TimeoutError:
            # librdkafka may still deliver it (message.timeout.ms is the same bound): at worst
            # the retry is a second notice, which at-least-once allows.
            return Attempt(Verdict.RETRY, "timeout", f"no acknowledgement in {self._timeout_s} s")


def _resolve(future: asyncio.Future[Attempt], outcome: Attempt) -> None:
    if not future.done():
        future.set_result(outcome)


def _refused(error: KafkaError) -> Attempt:
    refusal = refusal_of(error)
    if refusal is None:  # purged with others: not this record's fault
        return Attempt(Verdict.RETRY, "purged", str(error))
    reason = refusal.code.lower().lstrip("_")
    if refusal.permanent and not refusal.topic_gone:
        return Attempt(Verdict.DROP, reason, refusal.detail)
    return Attempt(Verdict.RETRY, reason, refusal.detail)


class KafkaPoller:
    """Serves the producer's delivery reports from a thread of its own, so an acknowledgement
    reaches its notice at once, whatever the loop is doing."""

    def __init__(self, producer: NoticeProducer) -> None:
        self._producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notice-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)
