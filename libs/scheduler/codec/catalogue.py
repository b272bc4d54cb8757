"""The schema catalogue: every version of every record type in ``schemas/``.

Layout (package ``scheduler_schemas``)::

    <folder>/v<N>.avsc                 version N of one record type (N = 1, 2, ... contiguous)
    <folder>/examples/v<N>/<name>.json example records of version N (Avro JSON encoding)

Each file is parsed on its own (fresh named types), so versions of one record type may repeat
their enums; a named type defined by two different record types is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from .errors import CatalogueError

NAMESPACE = "scheduler"
SCHEMA_PACKAGE = "scheduler_schemas"

_SCHEMA_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")
_EXAMPLE_DIR = re.compile(r"^v([1-9][0-9]*)$")


def fullname(record_type: str) -> str:
    """``"ScheduleRequest"`` -> ``"scheduler.ScheduleRequest"``; full names pass unchanged."""
    return record_type if "." in record_type else f"{NAMESPACE}.{record_type}"


@dataclass(frozen=True, slots=True)
class Example:
    """One example record of one schema version, as a Python datum (unions untagged)."""

    name: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of one record type."""

    name: str
    """Full name, e.g. ``scheduler.ScheduleRequest``."""
    version: int
    """1, 2, ...; 0 for a writer schema fetched from a registry that the catalogue lacks."""
    folder: str
    schema: dict[str, Any]
    """The ``.avsc`` JSON as written (with docs): what is registered with a schema registry."""
    parsed: dict[str, Any]
    """fastavro's parsed form, for reading and writing."""
    canonical_form: str
    """Avro Parsing Canonical Form."""
    fingerprint: bytes
    """CRC-64-AVRO (Rabin) of the canonical form, 8 bytes little-endian (as single-object)."""
    examples: tuple[Example, ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(str(f["name"]) for f in self.schema["fields"])

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" if self.version else f"{self.name} (not catalogued)"


class SchemaCatalogue:
    """All versions of all record types, indexed by name and by fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        by_name: dict[str, list[SchemaVersion]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        self._versions: dict[str, tuple[SchemaVersion, ...]] = {}
        for name, vs in sorted(by_name.items()):
            vs.sort(key=lambda v: v.version)
            numbers = [v.version for v in vs]
            if numbers != list(range(1, len(vs) + 1)):
                raise CatalogueError(f"{name}: versions must be 1..n without gaps, got {numbers}")
            if len({v.folder for v in vs}) != 1:
                raise CatalogueError(f"{name} is defined in several folders")
            self._versions[name] = tuple(vs)
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for v in versions:
            other = self._by_fingerprint.setdefault(v.fingerprint, v)
            if other is not v:
                raise CatalogueError(f"{v} and {other} have the same canonical form")

    @classmethod
    def load(cls, root: Traversable | None = None) -> SchemaCatalogue:
        """Load every schema under ``root`` (default: the installed ``scheduler_schemas``)."""
        if root is None:
            root = importlib.resources.files(SCHEMA_PACKAGE)
        versions: list[SchemaVersion] = []
        owner: dict[str, str] = {}  # named type full name -> record type that defines it
        for folder in sorted(root.iterdir(), key=lambda t: t.name):
            if not folder.is_dir() or folder.name.startswith(("_", ".")):
                continue
            for version in _load_folder(folder):
                versions.append(version)
                for named in version.parsed["__named_schemas"]:
                    defined_by = owner.setdefault(named, version.name)
                    if defined_by != version.name:
                        raise CatalogueError(
                            f"named type {named} is defined by both {defined_by} and {version.name}"
                        )
        return cls(versions)

    def record_types(self) -> tuple[str, ...]:
        """Full names of all record types, sorted."""
        return tuple(self._versions)

    def versions(self, record_type: str) -> tuple[SchemaVersion, ...]:
        """All versions of one record type, oldest first."""
        try:
            return self._versions[fullname(record_type)]
        except KeyError:
            raise CatalogueError(f"unknown record type {record_type!r}") from None

    def get(self, record_type: str, version: int) -> SchemaVersion:
        vs = self.versions(record_type)
        if not 1 <= version <= len(vs):
            raise CatalogueError(f"{record_type} has no version {version} (1..{len(vs)})")
        return vs[version - 1]

    def latest(self, record_type: str) -> SchemaVersion:
        """The newest version: the reader schema."""
        return self.versions(record_type)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(bytes(fp))

    def __iter__(self) -> Iterator[SchemaVersion]:
        for vs in self._versions.values():
            yield from vs


@functools.cache
def default_catalogue() -> SchemaCatalogue:
    """The catalogue of the installed ``scheduler_schemas`` package, loaded once."""
    return SchemaCatalogue.load()


def parse(schema: dict[str, Any]) -> dict[str, Any]:
    """Parse one schema with its own named types (so files never clash)."""
    parsed = fastavro.parse_schema(schema, named_schemas={})
    assert isinstance(parsed, dict)
    return parsed


def _load_folder(folder: Traversable) -> list[SchemaVersion]:
    schemas: dict[int, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".avsc"):
            match = _SCHEMA_FILE.match(entry.name)
            if match is None:
                raise CatalogueError(f"{folder.name}/{entry.name}: expected a name like v1.avsc")
            schemas[int(match.group(1))] = _read_json(entry, folder.name)
    examples = _example_files(folder, set(schemas))
    return [
        _make_version(folder.name, n, schema, examples.get(n, []))
        for n, schema in sorted(schemas.items())
    ]


def _example_files(folder: Traversable, versions: set[int]) -> dict[int, list[Traversable]]:
    found: dict[int, list[Traversable]] = {}
    examples = folder / "examples"
    if not examples.is_dir():
        return found
    for vdir in examples.iterdir():
        match = _EXAMPLE_DIR.match(vdir.name)
        if not vdir.is_dir() or match is None or int(match.group(1)) not in versions:
            raise CatalogueError(f"{folder.name}/examples/{vdir.name}: no such schema version")
        files = [f for f in vdir.iterdir() if f.name.endswith(".json")]
        found[int(match.group(1))] = sorted(files, key=lambda f: f.name)
    return found


def _make_version(
    folder: str, number: int, schema: dict[str, Any], example_files: list[Traversable]
) -> SchemaVersion:
    where = f"{folder}/v{number}.avsc"
    if schema.get("type") != "record":
        raise CatalogueError(f"{where}: top-level type must be a record")
    try:
        parsed = parse(schema)
    except Exception as exc:
        raise CatalogueError(f"{where}: {exc}") from exc
    canonical = to_parsing_canonical_form(parsed)
    version = SchemaVersion(
        name=str(parsed["name"]),
        version=number,
        folder=folder,
        schema=schema,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        examples=(),
    )
    examples = tuple(_load_example(version, f) for f in example_files)
    return dataclasses.replace(version, examples=examples)


def _load_example(version: SchemaVersion, file: Traversable) -> Example:
    where = f"{version.folder}/examples/v{version.version}/{file.name}"
    raw = _read_json(file, where)
    if set(raw) != set(version.field_names):
        raise CatalogueError(
            f"{where}: an example names every field of {version} exactly once; "
            f"missing {sorted(set(version.field_names) - set(raw))}, "
            f"unknown {sorted(set(raw) - set(version.field_names))}"
        )
    try:
        (record,) = list(fastavro.json_reader(io.StringIO(json.dumps(raw)), version.parsed))
        validate(record, version.parsed, raise_errors=True, strict=True)
    except (ValidationError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CatalogueError(f"{where}: not a valid {version}: {exc}") from exc
    assert isinstance(record, dict)
    return Example(name=file.name.removesuffix(".json"), record=record)


def _read_json(file: Traversable, where: str) -> dict[str, Any]:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CatalogueError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CatalogueError(f"{where}: expected a JSON object")
    return value
