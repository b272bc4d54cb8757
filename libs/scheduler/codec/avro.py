"""``AvroCodec``: dict <-> bytes for one record type, in either Avro wire format.

Writing uses Avro single-object encoding (``C3 01`` + 8-byte little-endian CRC-64-AVRO
fingerprint + body) unless a schema registry is given, in which case it uses the Confluent wire
format (``00`` + 4-byte big-endian schema id + body), registering the writer schema under the
codec's subject on first use. Reading accepts both formats and resolves the writer schema to the
reader schema (the latest version by default). Transport (Kafka) is not this module's business.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from .catalogue import SchemaCatalogue, SchemaVersion, default_catalogue, parse
from .compiled import InvalidValue, Unsupported, compile_writer, describe_invalid
from .errors import (
    IncompatibleSchema,
    InvalidRecord,
    MalformedRecord,
    NotAvro,
    RegistryError,
    TruncatedRecord,
    UnknownSchema,
)

if TYPE_CHECKING:  # imported where used: the registry client pulls in an OAuth stack (~0.3 s)
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = 10  # magic (2) + fingerprint (8)
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_SIZE = 5  # magic (1) + schema id (4)
_MISSING = object()


def _describe(error: Any) -> str:
    """One line per fastavro ValidationErrorData(datum, schema, field)."""
    datum, schema = getattr(error, "datum", None), getattr(error, "schema", None)
    field = str(getattr(error, "field", "") or "").removeprefix(".")
    if isinstance(schema, dict):
        schema = schema.get("name", schema.get("type"))
    return describe_invalid(field, datum, schema)


class WireFormat(StrEnum):
    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


def value_subject(topic: str) -> str:
    """Registry subject of a topic's values (Confluent TopicNameStrategy)."""
    return f"{topic}-value"


def definition_subject(topic: str) -> str:
    """Registry subject of the ScheduleDefinition records of a topic: `<topic>-<record name>`
    (Confluent's TopicRecordNameStrategy). Not `<topic>-value`: that subject holds the
    ScheduleRequest history, and a BACKWARD registry refuses another record type there."""
    return f"{topic}-{'scheduler.ScheduleDefinition'}"


def registry_client(url: str, config: Mapping[str, Any] | None = None) -> SchemaRegistryClient:
    """A schema registry client; ``mock://<name>`` gives confluent-kafka's in-memory registry,
    whose store belongs to the client instance (share the client between codecs)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client: SchemaRegistryClient = SchemaRegistryClient.new_client({**(config or {}), "url": url})
    return client


class AvroCodec:
    """Encodes and decodes the records of one record type (e.g. ``"ScheduleRequest"``).

    ``registry`` switches writing to the Confluent wire format and enables reading it; encoding
    then needs ``subject``, the subject to register the writer schema under (usually
    ``value_subject(logical_topic)``; a decode-only codec may leave it out).
    ``writer_version`` pins the schema version written (default: latest; pin an older one while
    readers are upgraded), ``reader_version`` the version decoded records are resolved to
    (default: latest).
    """

    def __init__(
        self,
        record_type: str,
        *,
        catalogue: SchemaCatalogue | None = None,
        registry: SchemaRegistryClient | None = None,
        subject: str | None = None,
        writer_version: int | None = None,
        reader_version: int | None = None,
    ) -> None:
        self._catalogue = catalogue if catalogue is not None else default_catalogue()
        latest = self._catalogue.latest(record_type)
        self.record_type = latest.name
        self.writer = (
            latest if writer_version is None else self._catalogue.get(latest.name, writer_version)
        )
        self.reader = (
            latest if reader_version is None else self._catalogue.get(latest.name, reader_version)
        )
        self._registry = registry
        self.subject = subject
        self._header: bytes | None = None if registry is not None else self._single_object_header()
        self._by_id: dict[int, SchemaVersion] = {}
        # The writer's field names, and each field's default (_MISSING: required), in order.
        fields = self.writer.schema["fields"]
        self._writer_fields: tuple[frozenset[str], tuple[tuple[str, Any], ...]] = (
            frozenset(f["name"] for f in fields),
            tuple((f["name"], f.get("default", _MISSING)) for f in fields),
        )
        # The compiled writer checks and writes in one pass (compiled.py); fastavro for a schema
        # it does not compile.
        try:
            self._write: Callable[[Mapping[str, Any]], bytes] | None = compile_writer(
                self.writer.parsed
            )
        except Unsupported:
            self._write = None

    @property
    def wire_format(self) -> WireFormat:
        """The format ``encode`` writes."""
        return WireFormat.SINGLE_OBJECT if self._registry is None else WireFormat.CONFLUENT

    # -- encoding -------------------------------------------------------------------------

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` with the writer schema; raises ``InvalidRecord`` if it does not fit.

        Fields that have a default may be omitted; unknown fields are refused.
        """
        if self._write is not None:
            datum = self._complete(record, validated=False)
            try:
                return self._writer_header() + self._write(datum)
            except InvalidValue as exc:
                raise InvalidRecord(f"invalid {self.writer}: {exc}") from None
        datum = self._complete(record)
        out = io.BytesIO()
        out.write(self._writer_header())
        try:
            fastavro.schemaless_writer(out, self.writer.parsed, datum)
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:
            raise InvalidRecord(f"cannot encode a {self.writer}: {exc}") from exc
        return out.getvalue()

    def _complete(self, record: Mapping[str, Any], validated: bool = True) -> dict[str, Any]:
        if not isinstance(record, Mapping):
            raise InvalidRecord(f"a {self.writer} must be a mapping, got {type(record).__name__}")
        names, defaults = self._writer_fields
        if not names.issuperset(record):
            unknown = set(record) - names
            raise InvalidRecord(f"unknown field(s) for {self.writer}: {sorted(map(str, unknown))}")
        datum: dict[str, Any] = {}
        missing: list[str] = []
        for name, default in defaults:
            value = record.get(name, _MISSING)
            if value is _MISSING:
                if default is _MISSING:
                    missing.append(name)
                    continue
                value = copy.deepcopy(default)
            datum[name] = value
        if missing:
            raise InvalidRecord(f"missing required field(s) for {self.writer}: {missing}")
        if not validated:
            return datum
        try:
            validate(datum, self.writer.parsed, raise_errors=True)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors)
            raise InvalidRecord(f"invalid {self.writer}: {problems}") from exc
        return datum

    def _single_object_header(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.writer.fingerprint

    def _writer_header(self) -> bytes:
        if self._header is None:
            schema_id = self._register()
            self._header = struct.pack(">BI", CONFLUENT_MAGIC, schema_id)
        return self._header

    def _register(self) -> int:
        assert self._registry is not None
        if not self.subject:
            raise ValueError("encoding with a schema registry needs the codec's subject")
        from confluent_kafka.schema_registry import Schema

        schema = Schema(json.dumps(self.writer.schema), "AVRO")
        try:
            schema_id = int(self._registry.register_schema(self.subject, schema))
        except Exception as exc:
            raise RegistryError(
                f"cannot register {self.writer} under subject {self.subject!r}: {exc}"
            ) from exc
        self._by_id[schema_id] = self.writer
        return schema_id

    # -- decoding -------------------------------------------------------------------------

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode a single-object or Confluent-framed record into the reader schema's shape.

        Raises a ``DecodeError`` subclass for bytes that cannot be read (reject the record),
        ``RegistryError`` if the registry is needed but fails (retry).
        """
        writer, offset = self._writer_of(bytes(data))
        body = io.BytesIO(data)
        body.seek(offset)
        reader = None if writer is self.reader else self.reader.parsed
        try:
            record: Any = fastavro.schemaless_reader(body, writer.parsed, reader)
        except (EOFError, IndexError) as exc:
            # fastavro signals reading past the end as EOFError (strings, bytes) or IndexError
            # (varints); an IndexError before the end is a bad union or enum index.
            if isinstance(exc, EOFError) or body.tell() >= len(data):
                raise TruncatedRecord(
                    f"the {writer} body ends early ({len(data) - offset} body bytes)"
                ) from exc
            raise MalformedRecord(f"not a valid {writer} body: {exc}") from exc
        except SchemaResolutionError as exc:
            reason = str(exc) if len(str(exc)) <= 200 else str(exc)[:197] + "..."
            raise IncompatibleSchema(f"cannot read a {writer} as {self.reader}: {reason}") from exc
        except Exception as exc:
            raise MalformedRecord(
                f"not a valid {writer} body: {type(exc).__name__}: {exc}"
            ) from exc
        trailing = len(data) - body.tell()
        if trailing:
            raise MalformedRecord(f"{trailing} trailing byte(s) after a {writer} record")
        if not isinstance(record, dict):
            raise MalformedRecord(f"expected a {self.reader} record, got {type(record).__name__}")
        return record

    def _writer_of(self, data: bytes) -> tuple[SchemaVersion, int]:
        if not data:
            raise TruncatedRecord("empty record")
        if data[0] == SINGLE_OBJECT_MAGIC[0]:
            if len(data) < 2:
                raise TruncatedRecord("record ends inside the single-object magic")
            if data[:2] != SINGLE_OBJECT_MAGIC:
                raise NotAvro(
                    f"bad single-object magic {data[:2].hex(' ')}; expected c3 01 (version 1)"
                )
            if len(data) < SINGLE_OBJECT_HEADER_SIZE:
                raise TruncatedRecord(
                    f"single-object header needs {SINGLE_OBJECT_HEADER_SIZE} bytes, got {len(data)}"
                )
            fp = data[2:SINGLE_OBJECT_HEADER_SIZE]
            version = self._catalogue.by_fingerprint(fp)
            if version is None:
                raise UnknownSchema(
                    f"unknown schema fingerprint {fp.hex()} (written with a schema version this "
                    "reader does not know: upgrade readers before writers)"
                )
            return self._check_type(version), SINGLE_OBJECT_HEADER_SIZE
        if data[0] == CONFLUENT_MAGIC:
            if len(data) < CONFLUENT_HEADER_SIZE:
                raise TruncatedRecord(
                    f"Confluent header needs {CONFLUENT_HEADER_SIZE} bytes, got {len(data)}"
                )
            (schema_id,) = struct.unpack(">I", data[1:CONFLUENT_HEADER_SIZE])
            return self._check_type(self._writer_by_id(schema_id)), CONFLUENT_HEADER_SIZE
        raise NotAvro(
            f"unknown magic byte 0x{data[0]:02x}: expected c3 01 (Avro single-object) "
            "or 00 (Confluent wire format)"
        )

    def _check_type(self, writer: SchemaVersion) -> SchemaVersion:
        if writer.name != self.record_type:
            raise IncompatibleSchema(f"the record is a {writer}, expected a {self.record_type}")
        return writer

    def _writer_by_id(self, schema_id: int) -> SchemaVersion:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        if self._registry is None:
            raise UnknownSchema(
                f"Confluent-framed record (schema id {schema_id}) but no schema registry is "
                "configured"
            )
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            registered = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchema(f"schema id {schema_id} is unknown to the registry") from exc
            raise RegistryError(f"cannot fetch schema id {schema_id}: {exc}") from exc
        except Exception as exc:
            raise RegistryError(f"cannot fetch schema id {schema_id}: {exc}") from exc
        version = self._from_registry(schema_id, registered)
        self._by_id[schema_id] = version
        return version

    def _from_registry(self, schema_id: int, registered: Schema) -> SchemaVersion:
        if (registered.schema_type or "AVRO") != "AVRO":
            raise IncompatibleSchema(f"schema id {schema_id} is {registered.schema_type}, not Avro")
        try:
            raw = json.loads(registered.schema_str or "")
            parsed = parse(raw if isinstance(raw, dict) else {"type": raw})
        except Exception as exc:
            raise IncompatibleSchema(f"schema id {schema_id} is not a valid Avro schema") from exc
        canonical = to_parsing_canonical_form(parsed)
        fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        known = self._catalogue.by_fingerprint(fp)
        if known is not None:
            return known  # the catalogue's parsed schema: no resolution if it is the reader
        name = str(parsed.get("name", parsed.get("type")))
        return SchemaVersion(
            name=name,
            version=0,  # not in the catalogue (e.g. registered by a newer writer)
            folder="",
            schema=raw,
            parsed=parsed,
            canonical_form=canonical,
            fingerprint=fp,
            examples=(),
        )
