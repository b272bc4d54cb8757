"""Typed records of the system's topics, one frozen dataclass per Avro record type.

Pure data: no I/O, no Avro. ``to_record()`` / ``from_record()`` convert to and from the dict
shape of the latest schema version (``schemas/<type>/v<N>.avsc``); ``scheduler.codec.RecordCodec``
turns them into bytes. All times are epoch milliseconds UTC (``*_ms``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum, StrEnum
from typing import Any, ClassVar, Self


class CommandKind(StrEnum):
    ABORT = "ABORT"
    REDRIVE = "REDRIVE"
    RESCHEDULE = "RESCHEDULE"


class ScheduleOperation(StrEnum):
    PUT = "PUT"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    DELETE = "DELETE"


class DeliveryOutcome(StrEnum):
    SENT = "SENT"
    RETRY = "RETRY"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


# Per record class: its field names, and the Enum type of each enum field. Computed once:
# dataclasses.fields() per call was a tenth of an encode on the dispatcher's hot path.
_FIELD_PLANS: dict[type, tuple[tuple[str, type[Enum] | None], ...]] = {}


def _field_plan(cls: type) -> tuple[tuple[str, type[Enum] | None], ...]:
    plan = _FIELD_PLANS.get(cls)
    if plan is None:
        plan = tuple(
            (f.name, f.type if isinstance(f.type, type) and issubclass(f.type, Enum) else None)
            for f in fields(cls)
        )
        _FIELD_PLANS[cls] = plan
    return plan


class _Record:
    """Field-by-field conversion; enum fields travel as their symbol."""

    __slots__ = ()
    AVRO_NAME: ClassVar[str]

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name, _enum in _field_plan(type(self)):
            value = getattr(self, name)
            record[name] = value.value if isinstance(value, Enum) else value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from a decoded record (extra keys are ignored, missing ones raise KeyError)."""
        kwargs: dict[str, Any] = {}
        for name, enum in _field_plan(cls):
            value = record[name]
            kwargs[name] = value if enum is None else enum(value)
        return cls(**kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRequest(_Record):
    """A client's request (topic scheduler.requests, key = app id)."""

    AVRO_NAME: ClassVar[str] = "scheduler.ScheduleRequest"

    message_id: str
    app_id: str
    payload_json: str
    send_at_ms: int
    created_ms: int
    source: str
    idempotency_key: str | None = None
    kafka_key: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleDefinition(_Record):
    """A change to one recurring schedule (topic scheduler.requests, key = app id). The timing,
    payload, Kafka key and paused flag are those of a PUT; other operations leave them null."""

    AVRO_NAME: ClassVar[str] = "scheduler.ScheduleDefinition"

    schedule_id: str
    app_id: str
    operation: ScheduleOperation
    issued_ms: int
    expression: str | None = None
    timezone: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    max_occurrences: int | None = None
    catch_up: str | None = None
    catch_up_limit: int | None = None
    payload_json: str | None = None
    kafka_key: str | None = None
    paused: bool | None = None
    flexible_window_ms: int | None = None  # v2


@dataclass(frozen=True, slots=True, kw_only=True)
class DueMessage(_Record):
    """One delivery attempt, in the due-minute ring topic of ``due_ms`` (key = message id)."""

    AVRO_NAME: ClassVar[str] = "scheduler.DueMessage"

    message_id: str
    app_id: str
    generation: int
    attempt: int
    due_ms: int
    send_at_ms: int
    created_ms: int
    payload_json: str
    kafka_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(_Record):
    """Abort / redrive / reschedule of one message (topic scheduler.commands, key = message id)."""

    AVRO_NAME: ClassVar[str] = "scheduler.Command"

    message_id: str
    app_id: str
    kind: CommandKind
    generation: int
    issued_ms: int
    send_at_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult(_Record):
    """Outcome of one attempt (compacted topic scheduler.results, key = message id)."""

    AVRO_NAME: ClassVar[str] = "scheduler.DeliveryResult"

    message_id: str
    app_id: str
    generation: int
    attempt: int
    outcome: DeliveryOutcome
    due_ms: int
    finished_ms: int
    lateness_ms: int
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedRequest(_Record):
    """A refused input record with the reason (topic scheduler.rejected, no key)."""

    AVRO_NAME: ClassVar[str] = "scheduler.RejectedRequest"

    reason: str
    detail: str
    original: bytes
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_ms: int
    app_id: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(_Record):
    """A message that exhausted its retries (topic scheduler.dead-letter, key = message id)."""

    AVRO_NAME: ClassVar[str] = "scheduler.DeadLetter"

    message_id: str
    app_id: str
    generation: int
    attempts: int
    due_ms: int
    failed_ms: int
    payload_json: str
    last_error: str
    last_http_status: int | None = None
    body_excerpt: str | None = None


RECORD_CLASSES: tuple[type[_Record], ...] = (
    ScheduleRequest,
    ScheduleDefinition,
    DueMessage,
    Command,
    DeliveryResult,
    RejectedRequest,
    DeadLetter,
)
