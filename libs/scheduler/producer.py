"""Kafka-native ingest: schedule messages by writing ScheduleRequest records yourself.

    producer = SchedulerProducer(KafkaSettings())
    message_id = producer.schedule("app_123", {"order": 42}, "2030-01-01T12:00:00+01:00")
    producer.flush()          # raises ScheduleError unless Kafka acknowledged every record
    producer.close()

`schedule` validates the request exactly as the HTTP gateway and the bucketer do (so a bad
request fails here, not silently downstream), assigns the message id (a ULID, or derived from
`idempotency_key` exactly as ingest derives it, decision 8), encodes the record in Avro and
queues it on the requests topic, keyed by app id. It does not wait for Kafka: call `flush()`
before treating the messages as scheduled. The record format for other languages is in
services/ingest/README.md ("Kafka-native ingest").

A producer is trusted like a data key of every app it names (decision 9): protect the requests
topic with Kafka ACLs in production. Records are not written to Cassandra here; the bucketer
writes the message record (status READY, source "kafka") when it consumes them.

An acknowledged record is not yet an accepted message: the bucketer refuses a request for an
unknown or deleted app, over the app's pending cap, or otherwise invalid, by writing a
`RejectedRequest` to the rejected topic. `RejectionsReader` reads those of your apps:

    rejections = RejectionsReader(KafkaSettings(), app_ids={"app_123"})  # before producing
    message_id = producer.schedule("app_123", ...)
    producer.flush()
    for rejected in rejections.poll(timeout_s=5.0):
        print(rejected.message_id, rejected.reason, rejected.detail)
    rejections.close()

Recurring schedules (docs/SCHEDULES.md) travel on the same topic, as `ScheduleDefinition`
records keyed by app id, so a schedule's changes keep their order with the app's messages:

    schedule_id = producer.put_schedule("app_123", "0 9 * * MON-FRI", {"report": "daily"},
                                        timezone="Europe/Berlin")
    producer.pause_schedule("app_123", schedule_id)   # also: resume_schedule, delete_schedule
    producer.flush()

`put_schedule` creates the schedule (a new ULID when `schedule_id` is None) or, given the id of
an existing one, replaces its timing, payload and Kafka key (keeping its creation time, paused
flag and cursor). `start` None means the creation instant for a new schedule and the current
start for an update, as over HTTP. Each call validates what the bucketer validates
(`validate_schedule_definition`) and queues one record; the bucketer applies it, or refuses it
to the rejected topic (`RejectionsReader`: `message_id` is then the schedule id; reasons as over
HTTP, plus `unknown_app`, `app_deleted`, `schedule_not_found`, `schedule_deleted`). Bucketers
of the release before schedules cannot read these records and refuse them too (reason
`unknown_schema`, or `wrong_schema` with a schema registry): upgrade the bucketers first.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition

from scheduler.clock import Clock, SystemClock
from scheduler.codec import CodecError, DecodeError, RecordCodec, definition_subject, value_subject
from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import derived_message_id, new_message_id
from scheduler.domain.recurrence import INVALID_END, INVALID_START
from scheduler.domain.sendat import parse_instant, parse_send_at
from scheduler.domain.validation import (
    validate_schedule_definition,
    validate_schedule_request,
)
from scheduler.domain.window import check_window, instant_in_window
from scheduler.kafka.producer import KafkaRecordProducer, ProduceError, RecordProducer
from scheduler.records import (
    RejectedRequest,
    ScheduleDefinition,
    ScheduleOperation,
    ScheduleRequest,
)
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.topics import Topics

if TYPE_CHECKING:  # the registry client pulls in an OAuth stack (~0.3 s of imports)
    from confluent_kafka.schema_registry import SchemaRegistryClient

SOURCE = "kafka"
log = logging.getLogger("scheduler.producer")


class ScheduleError(RuntimeError):
    """Kafka did not acknowledge every record queued since the previous flush."""


def send_at_ms(send_at: datetime | int | str) -> int:
    """Epoch ms of a timezone-aware datetime, epoch ms, or an RFC 3339 string with an offset.

    Sub-millisecond parts are rounded up (never earlier than asked). Raises ValidationError.
    """
    if isinstance(send_at, datetime):
        if send_at.tzinfo is None or send_at.utcoffset() is None:
            raise ValidationError("invalid_sendAt", "send_at must be timezone-aware")
        utc = send_at.utctimetuple()
        millis = -(-send_at.microsecond // 1000)
        return parse_send_at(calendar.timegm(utc) * 1000 + millis)
    return parse_send_at(send_at)


class SchedulerProducer:
    def __init__(
        self,
        kafka: KafkaSettings,
        scheduling: SchedulingSettings | None = None,
        *,
        clock: Clock | None = None,
        producer: RecordProducer | None = None,
        registry: SchemaRegistryClient | None = None,
    ) -> None:
        self._scheduling = scheduling or SchedulingSettings()
        self._topic = Topics(kafka, self._scheduling).requests
        self._clock = clock or SystemClock()
        self._producer = producer or KafkaRecordProducer(kafka.client_config())
        self._codec = RecordCodec(
            ScheduleRequest,
            registry=registry,
            subject=value_subject(self._topic) if registry is not None else None,
        )
        self._definitions, self._definitions_v1 = (
            RecordCodec(
                ScheduleDefinition,
                registry=registry,
                subject=definition_subject(self._topic) if registry is not None else None,
                writer_version=version,
            )
            for version in (None, 1)
        )

    def schedule(
        self,
        app_id: str,
        payload: Any,
        send_at: datetime | int | str,
        idempotency_key: str | None = None,
        kafka_key: str | None = None,
        flexible_window_ms: int | None = None,
    ) -> str:
        """Queue one message; returns its id. Raises ValidationError for a bad request.

        `flexible_window_ms`: deliver at the instant within [send_at, send_at + window] the
        message id picks (scheduler.domain.window); the message is stored with that instant."""
        if payload is None:
            raise ValidationError("missing_payload", "payload is required (any JSON but null)")
        try:
            payload_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError("invalid_payload", f"payload is not JSON: {exc}") from None
        now = self._clock.now_ms()
        message_id = (
            derived_message_id(app_id, idempotency_key)
            if idempotency_key is not None
            else new_message_id(now)
        )
        request = ScheduleRequest(
            message_id=message_id,
            app_id=app_id,
            payload_json=payload_json,
            send_at_ms=instant_in_window(
                message_id, send_at_ms(send_at), check_window(flexible_window_ms)
            ),
            created_ms=now,
            source=SOURCE,
            idempotency_key=idempotency_key,
            kafka_key=kafka_key,
        )
        validate_schedule_request(request, self._scheduling)
        self._producer.produce(self._topic, app_id.encode(), self._codec.encode(request))
        return message_id

    def put_schedule(
        self,
        app_id: str,
        expression: str,
        payload: Any,
        *,
        timezone: str = "UTC",
        start: datetime | int | str | None = None,
        end: datetime | int | str | None = None,
        max_occurrences: int | None = None,
        catch_up: str = "latest",
        catch_up_limit: int | None = None,
        kafka_key: str | None = None,
        paused: bool = False,
        schedule_id: str | None = None,
        flexible_window_ms: int | None = None,
    ) -> str:
        """Queue the creation (`schedule_id` None: a new id) or the update of a recurring
        schedule; returns its id. Raises ValidationError for a bad definition. `paused` applies
        to a new schedule only (an update keeps the flag: use pause_schedule, resume_schedule).
        `flexible_window_ms`: deliver each occurrence at the instant within [occurrence,
        occurrence + window] its id picks (docs/SCHEDULES.md); an update replaces it."""
        if payload is None:
            raise ValidationError("missing_payload", "payload is required (any JSON but null)")
        try:
            payload_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError("invalid_payload", f"payload is not JSON: {exc}") from None
        now = self._clock.now_ms()
        definition = ScheduleDefinition(
            schedule_id=new_message_id(now) if schedule_id is None else schedule_id,
            app_id=app_id,
            operation=ScheduleOperation.PUT,
            issued_ms=now,
            expression=expression,
            timezone=timezone,
            # None: the bucketer takes the creation instant, or an update's current start
            start_ms=parse_instant(start, INVALID_START, "start", send_at_ms),
            end_ms=parse_instant(end, INVALID_END, "end", send_at_ms),
            max_occurrences=max_occurrences,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            payload_json=payload_json,
            kafka_key=kafka_key,
            paused=paused,
            flexible_window_ms=check_window(flexible_window_ms),
        )
        return self._send(definition)

    def pause_schedule(self, app_id: str, schedule_id: str) -> None:
        """Queue a pause; the bucketer also aborts the occurrences already created ahead."""
        self._send(self._change(app_id, schedule_id, ScheduleOperation.PAUSE))

    def resume_schedule(self, app_id: str, schedule_id: str) -> None:
        self._send(self._change(app_id, schedule_id, ScheduleOperation.RESUME))

    def delete_schedule(self, app_id: str, schedule_id: str) -> None:
        """Queue a delete; the bucketer also aborts the occurrences already created ahead."""
        self._send(self._change(app_id, schedule_id, ScheduleOperation.DELETE))

    def _change(
        self, app_id: str, schedule_id: str, operation: ScheduleOperation
    ) -> ScheduleDefinition:
        return ScheduleDefinition(
            schedule_id=schedule_id,
            app_id=app_id,
            operation=operation,
            issued_ms=self._clock.now_ms(),
        )

    def _send(self, definition: ScheduleDefinition) -> str:
        validate_schedule_definition(definition, self._scheduling)
        record = definition.to_record()
        if definition.flexible_window_ms is None:
            # What version 1 can say is written as version 1: bucketers of the release before
            # the window read it without a schema registry too (a rolling upgrade).
            del record["flexible_window_ms"]
            value = self._definitions_v1.avro.encode(record)
        else:
            value = self._definitions.avro.encode(record)
        self._producer.produce(self._topic, definition.app_id.encode(), value)
        return definition.schedule_id

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged (acks=all); raise ScheduleError if not."""
        try:
            self._producer.flush(timeout_s)
        except ProduceError as exc:
            raise ScheduleError(str(exc)) from exc

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)


def attributed(
    rejected: RejectedRequest, definitions: RecordCodec[ScheduleDefinition]
) -> RejectedRequest:
    """A bucketer of the release before schedules refuses a ScheduleDefinition without reading
    it (no app id, reason unknown_schema or wrong_schema): take the app and the schedule id (as
    `message_id`) from the original record, so that its producer's reader sees the refusal."""
    if rejected.app_id is not None or not rejected.original:
        return rejected
    try:
        definition = definitions.decode(rejected.original)
    except (CodecError, KeyError, TypeError, ValueError):  # not a definition, or unreadable
        return rejected
    return dataclasses.replace(
        rejected, app_id=definition.app_id, message_id=definition.schedule_id
    )


class RejectionsReader:
    """The rejections of the given apps' requests, read from the rejected topic.

    It starts at the topic's end when built (build it before producing), or at the first
    rejection written at or after `since_ms` (e.g. after a restart). It joins no consumer group
    and commits nothing: each reader sees every matching rejection from its start on. A record
    so broken that its app could not be read (reason "undecodable", no `app_id`) is attributed
    to no app, and so never returned here; the operators' metrics count it. A schedule
    definition refused by a bucketer that cannot read it is attributed from its original record.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        scheduling: SchedulingSettings | None = None,
        *,
        app_ids: Iterable[str],
        since_ms: int | None = None,
        registry: SchemaRegistryClient | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._app_ids = frozenset(app_ids)
        topic = Topics(kafka, scheduling or SchedulingSettings()).rejected
        self._codec = RecordCodec(
            RejectedRequest,
            registry=registry,
            subject=value_subject(topic) if registry is not None else None,
        )
        self._definitions = RecordCodec(ScheduleDefinition, registry=registry)
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                # required by the client; unused: partitions are assigned, nothing is committed
                "group.id": f"rejections-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        # Explicit offsets, not a subscription at "latest": a rejection written while a group
        # assignment is still pending would be skipped.
        if since_ms is None:
            wanted = [TopicPartition(topic, p, self._end(topic, p, timeout_s)) for p in partitions]
        else:
            # no rejection at or after since_ms: the offset comes back as the end
            wanted = self._consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], timeout=timeout_s
            )
        self._consumer.assign(wanted)

    def _end(self, topic: str, partition: int, timeout_s: float) -> int:
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout_s
        )
        return int(high)

    def poll(self, timeout_s: float = 1.0) -> list[RejectedRequest]:
        """The matching rejections that arrive within `timeout_s` (returns early once the
        topic is read to its end and at least one was found)."""
        found: list[RejectedRequest] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = self._consumer.poll(min(left, 0.5))
            if message is None:
                if found:
                    break
                continue
            if message.error() is not None:
                log.warning("reading the rejected topic: %s", message.error())
                continue
            try:
                rejected = self._codec.decode(message.value() or b"")
            except DecodeError as exc:
                log.warning("skipped an undecodable rejected record: %s", exc)
                continue
            rejected = attributed(rejected, self._definitions)
            if rejected.app_id in self._app_ids:
                found.append(rejected)
        return found

    def close(self) -> None:
        self._consumer.close()
