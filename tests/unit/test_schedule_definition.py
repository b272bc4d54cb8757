"""The ScheduleDefinition record: its evolution through a schema registry, SchedulerProducer's
schedule methods, and the attribution of a previous bucketer's rejections."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import pytest

from scheduler.clock import ManualClock
from scheduler.codec import (
    AvroCodec,
    RecordCodec,
    SchemaCatalogue,
    UnknownSchema,
    WireFormat,
    definition_subject,
    registry_client,
)
from scheduler.domain.errors import ValidationError
from scheduler.domain.ids import is_message_id, new_message_id
from scheduler.kafka.producer import InMemoryProducer
from scheduler.producer import SchedulerProducer, attributed
from scheduler.records import RejectedRequest, ScheduleDefinition, ScheduleOperation
from scheduler.settings import KafkaSettings, SchedulingSettings

pytestmark = pytest.mark.unit

TOPIC = "scheduler.requests"
PUT_RECORD = {
    "schedule_id": "01KDVDNA00A300REVHDFQ2Y7MH",
    "app_id": "billing",
    "operation": "PUT",
    "issued_ms": 1_767_225_600_000,
    "expression": "0 9 * * MON-FRI",
    "timezone": "Europe/Berlin",
    "start_ms": None,
    "end_ms": None,
    "max_occurrences": None,
    "catch_up": None,
    "catch_up_limit": None,
    "payload_json": '{"report": "daily"}',
    "kafka_key": None,
    "paused": False,
    "flexible_window_ms": None,
}


def catalogue_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of this release's schemas; returns (root, the ScheduleDefinition folder)."""
    root = tmp_path / "schemas"
    shutil.copytree(
        Path(str(importlib.resources.files("scheduler_schemas"))),
        root,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root, root / "schedule_definition"


def future_catalogue(tmp_path: Path) -> SchemaCatalogue:
    """The catalogue of a later release whose ScheduleDefinition v3 adds an optional field."""
    root, folder = catalogue_copy(tmp_path)
    schema = json.loads((folder / "v2.avsc").read_text())
    schema["fields"].append(
        {
            "name": "description",
            "type": ["null", "string"],
            "default": None,
            "doc": "v3: a note for humans.",
        }
    )
    (folder / "v3.avsc").write_text(json.dumps(schema))
    (folder / "examples" / "v3").mkdir()
    example = json.loads((folder / "examples" / "v2" / "pause.json").read_text())
    example["description"] = {"string": "maintenance"}
    (folder / "examples" / "v3" / "pause.json").write_text(json.dumps(example))
    catalogue = SchemaCatalogue.load(root)
    assert catalogue.latest("ScheduleDefinition").version == 3
    return catalogue


def previous_catalogue(tmp_path: Path) -> SchemaCatalogue:
    """The catalogue of the release before the flexible window: ScheduleDefinition v1 only."""
    root, folder = catalogue_copy(tmp_path)
    (folder / "v2.avsc").unlink()
    shutil.rmtree(folder / "examples" / "v2")
    catalogue = SchemaCatalogue.load(root)
    assert catalogue.latest("ScheduleDefinition").version == 1
    return catalogue


def test_a_future_version_is_read_by_this_release_through_the_registry(tmp_path: Path) -> None:
    registry = registry_client("mock://schedule-definition-forward")
    writer = AvroCodec(
        "ScheduleDefinition",
        catalogue=future_catalogue(tmp_path),
        registry=registry,
        subject=definition_subject(TOPIC),
    )
    data = writer.encode({**PUT_RECORD, "description": "weekday report"})
    assert data[0] == 0  # Confluent wire format: the reader fetches the writer schema by id

    reader = RecordCodec(ScheduleDefinition, registry=registry)  # this release: v2
    assert reader.wire_format is WireFormat.CONFLUENT
    assert reader.decode(data) == ScheduleDefinition.from_record(PUT_RECORD)  # field dropped


def test_a_future_version_in_single_object_encoding_needs_the_readers_upgraded_first(
    tmp_path: Path,
) -> None:
    writer = AvroCodec("ScheduleDefinition", catalogue=future_catalogue(tmp_path))
    data = writer.encode({**PUT_RECORD, "description": "weekday report"})
    with pytest.raises(UnknownSchema, match="upgrade readers before writers"):
        RecordCodec(ScheduleDefinition).decode(data)


@pytest.mark.parametrize("wire", list(WireFormat))
def test_a_record_of_this_release_is_read_by_the_next(tmp_path: Path, wire: WireFormat) -> None:
    registry = registry_client("mock://schedule-definition-backward")
    this = RecordCodec(
        ScheduleDefinition,
        registry=registry if wire is WireFormat.CONFLUENT else None,
        subject=definition_subject(TOPIC),
    )
    v3 = AvroCodec("ScheduleDefinition", catalogue=future_catalogue(tmp_path), registry=registry)
    data = this.encode(ScheduleDefinition.from_record(PUT_RECORD))
    assert v3.decode(data) == {**PUT_RECORD, "description": None}


def test_the_producer_writes_version_1_unless_a_window_is_set(tmp_path: Path) -> None:
    """A rolling upgrade, both ways: bucketers of the release before the window read what this
    producer writes without one; a window they cannot read is refused by them (rejected topic),
    never applied without it. This release reads both, and records of that release."""
    p, fake, _ = producer()
    plain = p.put_schedule("app-1", "@daily", {"n": 1})
    windowed = p.put_schedule("app-1", "@daily", {"n": 1}, flexible_window_ms=900_000)
    p.pause_schedule("app-1", plain)
    p.flush()
    values = [r.value for r in fake.on("t.requests")]
    old = AvroCodec("ScheduleDefinition", catalogue=previous_catalogue(tmp_path))
    assert old.decode(values[0])["schedule_id"] == plain
    assert old.decode(values[2])["operation"] == "PAUSE"
    with pytest.raises(UnknownSchema):
        old.decode(values[1])
    this = RecordCodec(ScheduleDefinition)
    assert [this.decode(v).flexible_window_ms for v in values] == [None, 900_000, None]
    assert this.decode(values[1]).schedule_id == windowed
    old_record = {k: v for k, v in PUT_RECORD.items() if k != "flexible_window_ms"}
    assert this.decode(old.encode(old_record)) == ScheduleDefinition.from_record(PUT_RECORD)


def test_a_window_out_of_range_is_refused_by_the_producer() -> None:
    p, _, _ = producer()
    with pytest.raises(ValidationError) as refused:
        p.put_schedule("app-1", "@daily", {"n": 1}, flexible_window_ms=86_400_001)
    assert refused.value.token == "invalid_flexibleWindowMs"


def test_operations_travel_as_enum_symbols() -> None:
    codec = RecordCodec(ScheduleDefinition)
    for operation in ScheduleOperation:
        record = {**PUT_RECORD, "operation": operation.value}
        decoded = codec.decode(codec.avro.encode(record))
        assert decoded.operation is operation and decoded.to_record() == record


# -- SchedulerProducer -----------------------------------------------------------------------

DEFINITIONS = RecordCodec(ScheduleDefinition)


def producer() -> tuple[SchedulerProducer, InMemoryProducer, ManualClock]:
    fake, clock = InMemoryProducer(), ManualClock()
    kafka = KafkaSettings(topic_prefix="t.")
    return SchedulerProducer(kafka, SchedulingSettings(), clock=clock, producer=fake), fake, clock


def sent(fake: InMemoryProducer) -> list[tuple[bytes | None, ScheduleDefinition]]:
    return [(r.key, DEFINITIONS.decode(r.value)) for r in fake.on("t.requests")]


def test_put_schedule_queues_a_put_keyed_by_app_id_with_a_new_ulid() -> None:
    p, fake, clock = producer()
    schedule_id = p.put_schedule(
        "app_123",
        "0 9 * * MON-FRI",
        {"report": "daily"},
        timezone="Europe/Berlin",
        end="2030-01-01T00:00:00Z",
        catch_up="all",
        catch_up_limit=5,
        kafka_key="k",
    )
    p.flush()
    assert is_message_id(schedule_id)
    [(key, d)] = sent(fake)
    assert key == b"app_123"
    assert d == ScheduleDefinition(
        schedule_id=schedule_id,
        app_id="app_123",
        operation=ScheduleOperation.PUT,
        issued_ms=clock.now_ms(),
        expression="0 9 * * MON-FRI",
        timezone="Europe/Berlin",
        start_ms=None,  # the bucketer takes the creation instant (or an update's start)
        end_ms=1_893_456_000_000,
        max_occurrences=None,
        catch_up="all",
        catch_up_limit=5,
        payload_json='{"report":"daily"}',
        kafka_key="k",
        paused=False,
    )


def test_put_schedule_with_an_id_updates_that_schedule() -> None:
    p, fake, clock = producer()
    schedule_id = new_message_id(clock.now_ms())
    start = clock.now_ms() + 60_000
    assert p.put_schedule("a", "rate(1 hour)", 0, start=start, schedule_id=schedule_id) == (
        schedule_id
    )
    p.flush()
    [(_, d)] = sent(fake)
    assert (d.schedule_id, d.start_ms, d.payload_json) == (schedule_id, start, "0")


@pytest.mark.parametrize(
    ("method", "operation"),
    [
        ("pause_schedule", ScheduleOperation.PAUSE),
        ("resume_schedule", ScheduleOperation.RESUME),
        ("delete_schedule", ScheduleOperation.DELETE),
    ],
)
def test_pause_resume_and_delete_queue_their_operation(
    method: str, operation: ScheduleOperation
) -> None:
    p, fake, clock = producer()
    schedule_id = new_message_id(clock.now_ms())
    getattr(p, method)("app_123", schedule_id)
    p.flush()
    [(key, d)] = sent(fake)
    assert (key, d.operation, d.schedule_id, d.issued_ms) == (
        b"app_123",
        operation,
        schedule_id,
        clock.now_ms(),
    )
    assert d.expression is None and d.payload_json is None


@pytest.mark.parametrize(
    ("call", "token"),
    [
        (lambda p: p.put_schedule("a", "0 0 9 * * *", {}), "invalid_expression"),
        (lambda p: p.put_schedule("a", "@daily", {}, timezone="CET/Nowhere"), "invalid_timezone"),
        (lambda p: p.put_schedule("a", "@daily", None), "missing_payload"),
        (lambda p: p.put_schedule("a", "@daily", {1, 2}), "invalid_payload"),
        (lambda p: p.put_schedule("a", "@daily", "x" * 300_000), "payload_too_large"),
        (lambda p: p.put_schedule("a", "@daily", {}, start="yesterday"), "invalid_start"),
        (lambda p: p.put_schedule("a", "@daily", {}, end=5), "invalid_end"),
        (lambda p: p.put_schedule("a", "@daily", {}, catch_up="never"), "invalid_catchUp"),
        (lambda p: p.put_schedule("a", "@daily", {}, max_occurrences=0), "invalid_maxOccurrences"),
        (lambda p: p.put_schedule("a", "@daily", {}, kafka_key=""), "invalid_kafka_key"),
        (lambda p: p.put_schedule("", "@daily", {}), "invalid_app_id"),
        (lambda p: p.put_schedule("a", "@daily", {}, schedule_id="s-1"), "invalid_schedule_id"),
        (lambda p: p.pause_schedule("a", "not-a-ulid"), "invalid_schedule_id"),
    ],
)
def test_an_invalid_definition_raises_and_queues_nothing(call, token: str) -> None:  # type: ignore[no-untyped-def]
    p, fake, _ = producer()
    with pytest.raises(ValidationError) as raised:
        call(p)
    assert raised.value.token == token
    p.flush()
    assert fake.records == []


# -- rejections of a previous bucketer -------------------------------------------------------


def rejection(original: bytes, app_id: str | None = None) -> RejectedRequest:
    return RejectedRequest(
        reason="unknown_schema",
        detail="unknown schema fingerprint",
        original=original,
        source_topic=TOPIC,
        source_partition=0,
        source_offset=7,
        rejected_ms=1,
        app_id=app_id,
    )


def test_a_previous_bucketers_rejection_of_a_definition_is_attributed_to_its_app() -> None:
    original = DEFINITIONS.avro.encode(PUT_RECORD)
    found = attributed(rejection(original), DEFINITIONS)
    assert (found.app_id, found.message_id, found.reason) == (
        "billing",
        PUT_RECORD["schedule_id"],
        "unknown_schema",
    )


@pytest.mark.parametrize(
    "given",
    [rejection(b"not avro"), rejection(DEFINITIONS.avro.encode(PUT_RECORD), app_id="other")],
    ids=["undecodable", "attributed-already"],
)
def test_other_rejections_are_left_as_they_are(given: RejectedRequest) -> None:
    assert attributed(given, DEFINITIONS) == given


def test_with_a_registry_definitions_have_their_own_subject() -> None:
    registry = registry_client("mock://schedule-definition-producer")
    fake = InMemoryProducer()
    p = SchedulerProducer(
        KafkaSettings(topic_prefix="t."), clock=ManualClock(), producer=fake, registry=registry
    )
    p.put_schedule("app_123", "@daily", {"n": 1})
    p.schedule("app_123", {"n": 2}, ManualClock().now_ms() + 60_000)
    p.flush()
    assert [r.value[0] for r in fake.records] == [0, 0]  # Confluent wire format
    assert sorted(registry.get_subjects()) == [
        "t.requests-scheduler.ScheduleDefinition",
        "t.requests-value",
    ]
    reader = RecordCodec(ScheduleDefinition, registry=registry)
    assert reader.decode(fake.records[0].value).expression == "@daily"


def test_the_definition_subject_names_the_record() -> None:
    assert definition_subject("t.requests") == f"t.requests-{ScheduleDefinition.AVRO_NAME}"
