"""scheduler.codec: both wire formats round-trip, bad bytes raise typed errors, typed records."""

import io
import itertools
import json
import struct
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.codec import (
    AvroCodec,
    DecodeError,
    IncompatibleSchema,
    InvalidRecord,
    MalformedRecord,
    NotAvro,
    RecordCodec,
    RegistryError,
    TruncatedRecord,
    UnknownSchema,
    WireFormat,
    default_catalogue,
    registry_client,
    value_subject,
)
from scheduler.records import (
    RECORD_CLASSES,
    Command,
    CommandKind,
    DeliveryOutcome,
    DeliveryResult,
    DueMessage,
    RejectedRequest,
    ScheduleRequest,
)

pytestmark = pytest.mark.unit

CATALOGUE = default_catalogue()
EXAMPLES = [(v, e) for v in CATALOGUE for e in v.examples]
EXAMPLE_IDS = [f"{v.folder}-v{v.version}-{e.name}" for v, e in EXAMPLES]
WIRES = list(WireFormat)


@pytest.fixture
def registry() -> SchemaRegistryClient:
    """confluent-kafka's in-memory registry; its store belongs to this client instance."""
    return registry_client("mock://test-codec")


def make_codec(record_type: str, wire: WireFormat, registry: SchemaRegistryClient, **kw: Any):
    if wire is WireFormat.SINGLE_OBJECT:
        return AvroCodec(record_type, **kw)
    return AvroCodec(
        record_type, registry=registry, subject=value_subject("t." + record_type), **kw
    )


def request_record(**changes: Any) -> dict[str, Any]:
    return {
        "message_id": "01KDVDNA00N8BPESHC248GPMZH",
        "app_id": "billing",
        "payload_json": "{}",
        "send_at_ms": 1_767_225_600_000,
        "created_ms": 1_767_222_000_000,
        "idempotency_key": None,
        "source": "http",
        "kafka_key": None,
        "trace_id": None,
        **changes,
    }


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("version", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_every_example_round_trips(version, example, wire, registry) -> None:
    codec = make_codec(
        version.name,
        wire,
        registry,
        writer_version=version.version,
        reader_version=version.version,
    )
    data = codec.encode(example.record)
    assert codec.decode(data) == example.record


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("version", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_every_example_round_trips_as_a_typed_record(version, example, wire, registry) -> None:
    cls = next(c for c in RECORD_CLASSES if version.name == c.AVRO_NAME)
    latest = CATALOGUE.latest(version.name)
    as_latest = {
        f["name"]: example.record.get(f["name"], f.get("default")) for f in latest.schema["fields"]
    }
    obj = cls.from_record(as_latest)
    kw = {"registry": registry, "subject": "s-value"} if wire is WireFormat.CONFLUENT else {}
    codec = RecordCodec(cls, **kw)
    assert codec.wire_format is wire
    assert codec.decode(codec.encode(obj)) == obj
    assert obj.to_record() == as_latest


def test_single_object_header() -> None:
    codec = AvroCodec("ScheduleRequest")
    data = codec.encode(request_record())
    latest = CATALOGUE.latest("ScheduleRequest")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == latest.fingerprint
    body = io.BytesIO()
    fastavro.schemaless_writer(body, latest.parsed, request_record())
    assert data[10:] == body.getvalue()


def test_confluent_header_registers_the_subject_once(registry) -> None:
    calls = []
    register = registry.register_schema

    def counting(subject: str, schema: Schema, *a: Any, **kw: Any) -> int:
        calls.append(subject)
        return register(subject, schema, *a, **kw)

    registry.register_schema = counting
    codec = AvroCodec("ScheduleRequest", registry=registry, subject="scheduler.requests-value")
    first, second = codec.encode(request_record()), codec.encode(request_record(app_id="x"))
    assert calls == ["scheduler.requests-value"]
    assert first[0] == 0 and first[:5] == second[:5]
    (schema_id,) = struct.unpack(">I", first[1:5])
    registered = registry.get_latest_version("scheduler.requests-value")
    assert registered.schema_id == schema_id
    assert json.loads(registered.schema.schema_str)["name"] == "ScheduleRequest"


def test_readers_accept_both_formats(registry) -> None:
    single = AvroCodec("ScheduleRequest").encode(request_record())
    confluent = AvroCodec("ScheduleRequest", registry=registry, subject="s-value").encode(
        request_record()
    )
    reader = AvroCodec("ScheduleRequest", registry=registry)  # decode-only: no subject needed
    assert reader.decode(single) == reader.decode(confluent) == request_record()
    assert reader.wire_format is WireFormat.CONFLUENT
    assert AvroCodec("ScheduleRequest").wire_format is WireFormat.SINGLE_OBJECT


def test_optional_fields_may_be_omitted() -> None:
    codec = AvroCodec("ScheduleRequest")
    record = request_record()
    for name in ("idempotency_key", "kafka_key", "trace_id"):
        del record[name]
    assert codec.decode(codec.encode(record)) == request_record()


def test_older_writer_is_resolved_to_the_latest_reader(registry) -> None:
    v1 = request_record()
    del v1["kafka_key"], v1["trace_id"]
    for wire in WIRES:
        writer = make_codec("ScheduleRequest", wire, registry, writer_version=1)
        assert AvroCodec("ScheduleRequest", registry=registry).decode(writer.encode(v1)) == (
            request_record()
        )


def test_a_registered_schema_newer_than_the_catalogue_is_read(registry) -> None:
    """Forward direction: a newer producer registered v3; this reader (latest v2) drops the
    field it does not know."""
    v3 = dict(CATALOGUE.latest("ScheduleRequest").schema)
    v3["fields"] = [*v3["fields"], {"name": "region", "type": "string", "default": "eu"}]
    schema_id = registry.register_schema("s-value", Schema(json.dumps(v3), "AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(v3, named_schemas={}), request_record(region="us")
    )
    data = struct.pack(">bI", 0, schema_id) + body.getvalue()
    assert AvroCodec("ScheduleRequest", registry=registry).decode(data) == request_record()


# -- decode errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
def test_every_truncation_raises_truncated_record(wire, registry) -> None:
    codec = make_codec("ScheduleRequest", wire, registry)
    data = codec.encode(request_record(idempotency_key="k", trace_id="t"))
    for cut in range(len(data)):
        with pytest.raises(TruncatedRecord):
            codec.decode(data[:cut])


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 12,  # a varint that never ends
        b"\x02\x80",  # invalid UTF-8 in message_id
        b"\x00\x00\x00\x00\x00\x09" + b"\x00" * 8,  # union index out of range
    ],
)
def test_garbage_body_raises_malformed_record(wire, garbage, registry) -> None:
    codec = make_codec("ScheduleRequest", wire, registry)
    header = codec.encode(request_record())[: 10 if wire is WireFormat.SINGLE_OBJECT else 5]
    with pytest.raises(MalformedRecord):
        codec.decode(header + garbage)


@pytest.mark.parametrize("wire", WIRES)
def test_trailing_bytes_raise_malformed_record(wire, registry) -> None:
    codec = make_codec("Command", wire, registry)
    data = codec.encode(
        {
            "message_id": "m",
            "app_id": "a",
            "kind": "ABORT",
            "generation": 0,
            "issued_ms": 1,
            "send_at_ms": None,
        }
    )
    with pytest.raises(MalformedRecord, match="1 trailing byte"):
        codec.decode(data + b"\x00")


@pytest.mark.parametrize(
    "data",
    [b'{"message_id": "x"}', b"\x01\x02\x03", b"\xc3\x02" + b"\x00" * 20, b"Obj\x01"],
    ids=["json", "low-byte", "single-object-v2", "container-file"],
)
def test_wrong_magic_raises_not_avro(data: bytes) -> None:
    with pytest.raises(NotAvro, match="magic"):
        AvroCodec("ScheduleRequest").decode(data)


def test_unknown_fingerprint_raises_unknown_schema() -> None:
    with pytest.raises(UnknownSchema, match="fingerprint 0011223344556677"):
        AvroCodec("ScheduleRequest").decode(bytes.fromhex("c301 0011223344556677") + b"\x00" * 9)


def test_unknown_schema_id_raises_unknown_schema(registry) -> None:
    data = struct.pack(">bI", 0, 999) + b"\x00" * 9
    with pytest.raises(UnknownSchema, match="schema id 999"):
        AvroCodec("ScheduleRequest", registry=registry).decode(data)
    with pytest.raises(UnknownSchema, match="no schema registry"):
        AvroCodec("ScheduleRequest").decode(data)


@pytest.mark.parametrize("wire", WIRES)
def test_another_record_type_raises_incompatible_schema(wire, registry) -> None:
    example = next(e for v, e in EXAMPLES if v.name == "scheduler.DueMessage")
    data = make_codec("DueMessage", wire, registry).encode(example.record)
    with pytest.raises(IncompatibleSchema, match=r"is a scheduler\.DueMessage v1, expected"):
        AvroCodec("Command", registry=registry).decode(data)


def test_a_registered_non_record_schema_raises_incompatible_schema(registry) -> None:
    schema_id = registry.register_schema("x-value", Schema('"string"', "AVRO"))
    with pytest.raises(IncompatibleSchema):
        AvroCodec("Command", registry=registry).decode(struct.pack(">bI", 0, schema_id) + b"\x02a")


class BrokenRegistry:
    def register_schema(self, *a: Any, **kw: Any) -> int:
        raise ConnectionError("registry down")

    def get_schema(self, *a: Any, **kw: Any) -> Schema:
        raise ConnectionError("registry down")


def test_registry_failures_raise_registry_error_not_decode_error() -> None:
    codec = AvroCodec("Command", registry=BrokenRegistry(), subject="s-value")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="registry down"):
        codec.encode(
            {"message_id": "m", "app_id": "a", "kind": "ABORT", "generation": 0, "issued_ms": 1}
        )
    with pytest.raises(RegistryError) as info:
        codec.decode(struct.pack(">bI", 0, 7) + b"\x00")
    assert not isinstance(info.value, DecodeError)


def test_encoding_with_a_registry_needs_a_subject(registry) -> None:
    with pytest.raises(ValueError, match="subject"):
        AvroCodec("ScheduleRequest", registry=registry).encode(request_record())


@given(st.binary(max_size=64), st.sampled_from([b"", b"\xc3\x01", b"\x00"]))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes, prefix: bytes) -> None:
    codec = AvroCodec("DeliveryResult")
    latest = CATALOGUE.latest("DeliveryResult")
    if prefix == b"\xc3\x01":
        prefix += latest.fingerprint
    try:
        record = codec.decode(prefix + data)
    except DecodeError:
        return
    assert set(record) == set(latest.field_names)


# -- encode errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({k: v for k, v in request_record().items() if k != "app_id"}, "missing.*app_id"),
        (request_record(app_id=7), "app_id"),
        (request_record(send_at_ms="soon"), "send_at_ms"),
        (request_record(send_at_ms=2**63), "send_at_ms"),
        (request_record(send_at_ms=1.5), "send_at_ms"),
        (request_record(send_at_ms=True), "send_at_ms"),
        (request_record(kafka_key=b"k"), "kafka_key"),
        (request_record(sendAt=1), "unknown.*sendAt"),
        (request_record(app_id="\udc80"), "cannot encode"),
        (["not", "a", "mapping"], "mapping"),
    ],
    ids=[
        "missing",
        "int-for-string",
        "str-for-long",
        "long-overflow",
        "float",
        "bool",
        "bytes-for-string",
        "unknown-field",
        "lone-surrogate",
        "not-a-mapping",
    ],
)
def test_invalid_records_raise_invalid_record(record, message: str) -> None:
    with pytest.raises(InvalidRecord, match=message):
        AvroCodec("ScheduleRequest").encode(record)


def test_invalid_enum_symbol_raises_invalid_record() -> None:
    record = {"message_id": "m", "app_id": "a", "kind": "EXPLODE", "generation": 0, "issued_ms": 1}
    with pytest.raises(InvalidRecord, match="kind"):
        AvroCodec("Command").encode(record)


def test_older_writer_refuses_fields_it_cannot_write() -> None:
    with pytest.raises(InvalidRecord, match=r"unknown.*kafka_key"):
        AvroCodec("ScheduleRequest", writer_version=1).encode(request_record())


# -- typed records ------------------------------------------------------------------------------


def test_typed_records_convert_enums_and_bytes() -> None:
    command = Command(
        message_id="m",
        app_id="a",
        kind=CommandKind.RESCHEDULE,
        generation=2,
        issued_ms=5,
        send_at_ms=9,
    )
    assert command.to_record()["kind"] == "RESCHEDULE"
    assert type(command.to_record()["kind"]) is str
    assert Command.from_record(command.to_record()).kind is CommandKind.RESCHEDULE
    rejected = RejectedRequest(
        reason="undecodable",
        detail="d",
        original=b"\xc3\x01\xff",
        source_topic="t",
        source_partition=0,
        source_offset=1,
        rejected_ms=2,
    )
    codec = RecordCodec(RejectedRequest)
    assert codec.decode(codec.encode(rejected)) == rejected


def test_typed_codec_refuses_another_type() -> None:
    result = DeliveryResult(
        message_id="m",
        app_id="a",
        generation=0,
        attempt=1,
        outcome=DeliveryOutcome.SENT,
        due_ms=1,
        finished_ms=2,
        lateness_ms=1,
    )
    data = RecordCodec(DeliveryResult).encode(result)
    with pytest.raises(IncompatibleSchema):
        RecordCodec(DueMessage).decode(data)


def test_typed_encode_of_an_out_of_range_int_raises_invalid_record() -> None:
    message = DueMessage(
        message_id="m",
        app_id="a",
        generation=2**31,
        attempt=1,
        due_ms=1,
        send_at_ms=1,
        created_ms=0,
        payload_json="{}",
    )
    with pytest.raises(InvalidRecord, match="generation"):
        RecordCodec(DueMessage).encode(message)


# -- property: random valid records round-trip --------------------------------------------------

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=40),
    "bytes": st.binary(max_size=40),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "boolean": st.booleans(),
}


def _strategy(avro_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(avro_type, list):
        return st.one_of(*(_strategy(t) for t in avro_type))
    if isinstance(avro_type, dict):
        assert avro_type["type"] == "enum", avro_type
        return st.sampled_from(avro_type["symbols"])
    if avro_type == "null":
        return st.none()
    return _PRIMITIVES[avro_type]


def record_strategy(record_type: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = CATALOGUE.latest(record_type).schema["fields"]
    return st.fixed_dictionaries({f["name"]: _strategy(f["type"]) for f in fields})


@pytest.fixture(scope="module")
def typed_codecs() -> dict[tuple[str, WireFormat], RecordCodec[Any]]:
    registry = registry_client("mock://test-codec-property")
    codecs: dict[tuple[str, WireFormat], RecordCodec[Any]] = {}
    for cls in RECORD_CLASSES:
        codecs[cls.AVRO_NAME, WireFormat.SINGLE_OBJECT] = RecordCodec(cls)
        codecs[cls.AVRO_NAME, WireFormat.CONFLUENT] = RecordCodec(
            cls, registry=registry, subject=value_subject("p." + cls.AVRO_NAME)
        )
    return codecs


@pytest.mark.parametrize(("cls", "wire"), list(itertools.product(RECORD_CLASSES, WIRES)), ids=str)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_random_valid_records_round_trip(cls, wire, typed_codecs, data) -> None:
    record = data.draw(record_strategy(cls.AVRO_NAME))
    obj = cls.from_record(record)
    codec = typed_codecs[cls.AVRO_NAME, wire]
    encoded = codec.encode(obj)
    assert codec.decode(encoded) == obj
    assert codec.avro.decode(encoded) == record
    assert obj.to_record() == record


def test_schedule_request_keeps_falsy_payloads() -> None:
    codec = RecordCodec(ScheduleRequest)
    for payload in ["0", "false", "null", '""', "[]", "{}"]:
        request = ScheduleRequest.from_record(request_record(payload_json=payload))
        assert json.loads(codec.decode(codec.encode(request)).payload_json) == json.loads(payload)
