"""schemas/: the catalogue is complete, consistent, documented, and every change stays compatible.

The central check (as in sentry-kafka-schemas): every example of every version is written with
its own schema and read with every newer reader schema, in both wire formats.
"""

import dataclasses
import importlib.resources
import json
import shutil
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro.validation import validate

from scheduler.codec import (
    AvroCodec,
    CatalogueError,
    CodecError,
    Example,
    SchemaCatalogue,
    SchemaVersion,
    default_catalogue,
    registry_client,
    value_subject,
)
from scheduler.records import RECORD_CLASSES

pytestmark = pytest.mark.unit

RECORD_TYPES = {
    "scheduler.ScheduleRequest",
    "scheduler.ScheduleDefinition",
    "scheduler.DueMessage",
    "scheduler.Command",
    "scheduler.DeliveryResult",
    "scheduler.RejectedRequest",
    "scheduler.DeadLetter",
}
TOPICS = [
    "scheduler.requests",
    "scheduler.commands",
    "scheduler.due.00",
    "scheduler.due.59",
    "scheduler.results",
    "scheduler.rejected",
    "scheduler.dead-letter",
]
SCHEMAS_ROOT = Path(str(importlib.resources.files("scheduler_schemas")))

CATALOGUE = default_catalogue()
ALL_VERSIONS = list(CATALOGUE)
EXAMPLES = [(v, e) for v in ALL_VERSIONS for e in v.examples]


def example_id(item: tuple[SchemaVersion, Example]) -> str:
    version, example = item
    return f"{version.folder}-v{version.version}-{example.name}"


def test_catalogue_has_every_record_type() -> None:
    assert set(CATALOGUE.record_types()) == RECORD_TYPES


def test_schemas_are_package_data() -> None:
    files = {p.name for p in importlib.resources.files("scheduler_schemas").iterdir()}
    assert {"README.md", "schedule_request", "due_message"} <= files


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=str)
def test_every_version_has_examples(version: SchemaVersion) -> None:
    assert version.examples, f"{version} needs at least one example"


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=str)
def test_schema_conventions(version: SchemaVersion) -> None:
    schema = version.schema
    assert schema["namespace"] == "scheduler"
    assert schema.get("doc")
    for field in schema["fields"]:
        assert field.get("doc"), f"{version}.{field['name']} has no doc"
        if field["name"].endswith("_ms"):
            assert field["type"] in ("long", ["null", "long"]), f"{field['name']} must be a long"
        if isinstance(field["type"], list):
            assert field["type"][0] == "null" and field.get("default", "x") is None, (
                f"{version}.{field['name']}: optional fields are ['null', T] with default null"
            )


@pytest.mark.parametrize(("version", "example"), EXAMPLES, ids=map(example_id, EXAMPLES))
def test_example_validates(version: SchemaVersion, example: Example) -> None:
    assert validate(example.record, version.parsed, raise_errors=True, strict=True)


def test_latest_versions_match_the_record_classes() -> None:
    assert {c.AVRO_NAME for c in RECORD_CLASSES} == RECORD_TYPES
    for cls in RECORD_CLASSES:
        latest = CATALOGUE.latest(cls.AVRO_NAME)
        assert {f.name for f in dataclasses.fields(cls)} == set(latest.field_names), cls


def test_fingerprint_is_crc64_avro_of_the_canonical_form() -> None:
    for version in ALL_VERSIONS:
        assert version.fingerprint == rabin(version.canonical_form.encode()).to_bytes(8, "little")
    # Test vector of the Avro specification's test suite: fingerprint64('"null"').
    assert rabin(b'"null"') == 7195948357588979594


def rabin(data: bytes) -> int:
    """CRC-64-AVRO as printed in the Avro specification (independent of fastavro)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# -- compatibility ------------------------------------------------------------------------------


def compatibility_problems(catalogue: SchemaCatalogue, registry: SchemaRegistryClient) -> list[str]:
    """Write every example of every version with its own schema, read it with every reader
    version from its own up to the latest, in both wire formats; list what fails."""
    problems = []
    for name in catalogue.record_types():
        versions = catalogue.versions(name)
        for older in versions:
            writers = {
                "single-object": AvroCodec(name, catalogue=catalogue, writer_version=older.version),
                "confluent": AvroCodec(
                    name,
                    catalogue=catalogue,
                    registry=registry,
                    subject=value_subject(f"compat.{name}.v{older.version}"),
                    writer_version=older.version,
                ),
            }
            for newer in versions[older.version - 1 :]:
                reader = AvroCodec(
                    name, catalogue=catalogue, registry=registry, reader_version=newer.version
                )
                for example in older.examples:
                    expected = {
                        f["name"]: example.record.get(f["name"], f.get("default"))
                        for f in newer.schema["fields"]
                    }
                    for wire, writer in writers.items():
                        where = f"{older} example {example.name} read as {newer} ({wire})"
                        try:
                            decoded = reader.decode(writer.encode(example.record))
                        except CodecError as exc:
                            problems.append(f"{where}: {exc}")
                            continue
                        if decoded != expected:
                            problems.append(f"{where}: got {decoded}, expected {expected}")
                # Structural check, independent of the examples: a reader field that the writer
                # lacks needs a default.
                added = set(newer.field_names) - set(older.field_names)
                for field in newer.schema["fields"]:
                    if field["name"] in added and "default" not in field:
                        problems.append(f"{newer} adds {field['name']} without a default")
    return problems


def mock_registry() -> SchemaRegistryClient:
    return registry_client("mock://test-schemas")


def test_every_example_reads_with_every_newer_schema() -> None:
    assert compatibility_problems(CATALOGUE, mock_registry()) == []


def test_an_incompatible_change_is_caught(tmp_path: Path) -> None:
    """The check above has teeth: a v2 that adds a required field (and examples that have it)
    still loads, but v1 examples no longer read with it."""
    root = copy_schemas(tmp_path)
    v2 = root / "schedule_request" / "v2.avsc"
    schema = json.loads(v2.read_text())
    schema["fields"].append({"name": "priority", "type": "int", "doc": "required, no default"})
    v2.write_text(json.dumps(schema))
    for example in (root / "schedule_request" / "examples" / "v2").iterdir():
        record = json.loads(example.read_text())
        example.write_text(json.dumps({**record, "priority": 1}))
    broken = SchemaCatalogue.load(root)
    problems = compatibility_problems(broken, mock_registry())
    assert any("v1 example" in p and "ScheduleRequest v2" in p for p in problems), problems
    assert any("adds priority without a default" in p for p in problems), problems


def test_a_changed_enum_is_caught(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    path = root / "command" / "v2.avsc"
    schema = json.loads((root / "command" / "v1.avsc").read_text())
    schema["fields"][2]["type"]["symbols"] = ["ABORT", "REDRIVE"]  # RESCHEDULE removed
    path.write_text(json.dumps(schema))
    broken = SchemaCatalogue.load(root)
    problems = compatibility_problems(broken, mock_registry())
    assert any("reschedule read as scheduler.Command v2" in p for p in problems), problems


# -- catalogue consistency ----------------------------------------------------------------------


def copy_schemas(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_named_types_must_not_clash_across_record_types(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    schema = json.loads((root / "dead_letter" / "v1.avsc").read_text())
    schema["fields"].append(
        {
            "name": "kind",
            "type": {"type": "enum", "name": "CommandKind", "symbols": ["X"]},
            "default": "X",
        }
    )
    (root / "dead_letter" / "v2.avsc").write_text(json.dumps(schema))
    with pytest.raises(CatalogueError, match="CommandKind is defined by both"):
        SchemaCatalogue.load(root)


def test_versions_of_one_type_may_repeat_their_enums(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    schema = json.loads((root / "command" / "v1.avsc").read_text())
    schema["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    (root / "command" / "v2.avsc").write_text(json.dumps(schema))
    catalogue = SchemaCatalogue.load(root)
    assert catalogue.latest("Command").version == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: (r / "command" / "v3.avsc").write_text((r / "command/v1.avsc").read_text()),
            "without gaps",
        ),
        (lambda r: (r / "command" / "latest.avsc").write_text("{}"), "like v1.avsc"),
        (lambda r: (r / "command" / "examples" / "v1" / "x.json").write_text("[]"), "object"),
        (
            lambda r: (r / "command" / "examples" / "v1" / "abort.json").write_text(
                json.dumps(
                    {**json.loads((r / "command/examples/v1/abort.json").read_text()), "extra": 1}
                )
            ),
            "unknown \\['extra'\\]",
        ),
        (
            lambda r: (r / "command" / "examples" / "v1" / "abort.json").write_text(
                json.dumps(
                    {
                        **json.loads((r / "command/examples/v1/abort.json").read_text()),
                        "kind": "EXPLODE",
                    }
                )
            ),
            "not a valid scheduler.Command v1",
        ),
        (lambda r: (r / "command" / "examples" / "v7").mkdir(), "no such schema version"),
    ],
    ids=["gap", "bad-name", "not-object", "extra-field", "bad-enum", "orphan-examples"],
)
def test_inconsistent_trees_are_refused(tmp_path: Path, mutate, message: str) -> None:
    root = copy_schemas(tmp_path)
    mutate(root)
    with pytest.raises(CatalogueError, match=message):
        SchemaCatalogue.load(root)


# -- the topic catalogue ------------------------------------------------------------------------


def test_readme_catalogues_every_topic_and_record_type() -> None:
    readme = (SCHEMAS_ROOT / "README.md").read_text()
    for topic in ["scheduler.requests", "scheduler.commands", "scheduler.due.NN", *TOPICS[4:]]:
        assert f"`{topic}`" in readme, topic
    for name in RECORD_TYPES:
        assert name.removeprefix("scheduler.") in readme
    assert "BACKWARD" in readme
