"""Intake: raw request record -> decoded, validated request of a live app, or a rejection.

The requests topic carries two record types: `ScheduleRequest` (a message, admitted here) and
`ScheduleDefinition` (a change to a recurring schedule, applied by `schedules.py`).
`Intake.is_definition` tells them apart by the writer schema named in the record's header (the
single-object fingerprint in the catalogue, or the Confluent schema id in the registry), before
decoding. When the header names no known type, the record takes the request path, whose decoder
reports what is wrong with it, as before schedules existed.

Every way a record can be bad ends in a `Rejection` with a machine-readable reason; nothing in
here raises for bad input, so one poison record never blocks its partition. Only transient
failures (schema registry, app store unavailable) raise, and the batch is retried.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.clock import Clock
from scheduler.codec import (
    DecodeError,
    IncompatibleSchema,
    MalformedRecord,
    NotAvro,
    RecordCodec,
    SchemaCatalogue,
    UnknownSchema,
    default_catalogue,
)
from scheduler.codec.avro import (
    CONFLUENT_HEADER_SIZE,
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_HEADER_SIZE,
    SINGLE_OBJECT_MAGIC,
)
from scheduler.domain.errors import ValidationError
from scheduler.domain.validation import validate_schedule_request
from scheduler.records import ScheduleDefinition, ScheduleRequest
from scheduler.settings import SchedulingSettings
from scheduler.store.ports import Application, AppLookup

if TYPE_CHECKING:  # the registry client pulls in an OAuth stack (~0.3 s of imports)
    from confluent_kafka.schema_registry import SchemaRegistryClient


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed Kafka record, transport-neutral (unit tests build these directly)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    record: InputRecord
    request: ScheduleRequest
    app: Application


@dataclass(frozen=True, slots=True)
class Rejection:
    record: InputRecord
    reason: str  # machine-readable: not_avro, malformed, unknown_schema, wrong_schema, <token>...
    detail: str
    app_id: str | None = None
    message_id: str | None = None


def decode_reason(error: DecodeError) -> str:
    if isinstance(error, NotAvro):
        return "not_avro"
    if isinstance(error, UnknownSchema):
        return "unknown_schema"
    if isinstance(error, IncompatibleSchema):
        return "wrong_schema"
    if isinstance(error, MalformedRecord):
        return "malformed"
    return "undecodable"


class CachedApps:
    """AppLookup with a short per-app cache: apps change rarely, requests come in thousands.

    A deleted or changed app is seen within `ttl_ms` (the documented cache time).
    """

    def __init__(self, apps: AppLookup, clock: Clock, ttl_ms: int) -> None:
        self._apps = apps
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._cache: dict[str, tuple[float, Application | None]] = {}

    def get_app(self, app_id: str) -> Application | None:
        now = self._clock.monotonic_ms()
        hit = self._cache.get(app_id)
        if hit is not None and now - hit[0] < self._ttl_ms:
            return hit[1]
        app = self._apps.get_app(app_id)
        if len(self._cache) > 100_000:  # bounded: forget everything rather than grow forever
            self._cache.clear()
        self._cache[app_id] = (now, app)
        return app


class WriterNames:
    """The full name of the record type that wrote a record, read from its header only."""

    def __init__(
        self, catalogue: SchemaCatalogue, registry: SchemaRegistryClient | None = None
    ) -> None:
        self._catalogue = catalogue
        self._registry = registry
        self._by_id: dict[int, str] = {}

    def of(self, value: bytes) -> str | None:
        """None when the header names no known schema (not Avro, unknown fingerprint or id, the
        registry unreachable): the decoder of the request path then says what is wrong."""
        if value[:2] == SINGLE_OBJECT_MAGIC and len(value) >= SINGLE_OBJECT_HEADER_SIZE:
            version = self._catalogue.by_fingerprint(value[2:SINGLE_OBJECT_HEADER_SIZE])
            return None if version is None else version.name
        if value[:1] == bytes([CONFLUENT_MAGIC]) and len(value) >= CONFLUENT_HEADER_SIZE:
            if self._registry is None:
                return None
            (schema_id,) = struct.unpack(">I", value[1:CONFLUENT_HEADER_SIZE])
            name = self._by_id.get(schema_id)
            if name is None:
                try:
                    raw = json.loads(self._registry.get_schema(schema_id).schema_str or "")
                    name = str(raw["name"])
                    if "." not in name and raw.get("namespace"):
                        name = f"{raw['namespace']}.{name}"
                except Exception:  # noqa: BLE001 - the request path's decoder reports it
                    return None
                self._by_id[schema_id] = name
            return name
        return None


class Intake:
    def __init__(
        self,
        codec: RecordCodec[ScheduleRequest],
        apps: AppLookup,
        scheduling: SchedulingSettings,
        *,
        catalogue: SchemaCatalogue | None = None,
        registry: SchemaRegistryClient | None = None,
    ) -> None:
        """`catalogue` and `registry`: those the codecs use (default: the installed one)."""
        self._codec = codec
        self._apps = apps
        self._scheduling = scheduling
        self._names = WriterNames(catalogue or default_catalogue(), registry)

    def is_definition(self, record: InputRecord) -> bool:
        """A ScheduleDefinition (schedules.py applies it), not a ScheduleRequest."""
        return bool(record.value) and (
            self._names.of(record.value or b"") == ScheduleDefinition.AVRO_NAME
        )

    def admit(self, record: InputRecord) -> Accepted | Rejection:
        if not record.value:
            return Rejection(record, "empty", "the record has no value")
        try:
            request = self._codec.decode(record.value)
        except DecodeError as exc:
            return Rejection(record, decode_reason(exc), str(exc))
        except (KeyError, TypeError, ValueError) as exc:  # decoded, but not a ScheduleRequest
            return Rejection(record, "malformed", f"{type(exc).__name__}: {exc}")
        ids = {"app_id": request.app_id or None, "message_id": request.message_id or None}
        try:
            validate_schedule_request(request, self._scheduling)
        except ValidationError as exc:
            return Rejection(record, exc.token, exc.message, **ids)
        app = self._apps.get_app(request.app_id)
        if app is None:
            return Rejection(record, "unknown_app", f"no application {request.app_id!r}", **ids)
        if app.deleted_ms is not None:
            return Rejection(
                record, "app_deleted", f"application {app.app_id!r} was deleted", **ids
            )
        return Accepted(record, request, app)
