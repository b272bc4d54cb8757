"""The compiled Avro writer (scheduler.codec.compiled) is held to fastavro: the same bytes as
`schemaless_writer` for every valid record of every schema version, and a refusal exactly where
`fastavro.validation.validate` (or the writer) refuses."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.codec.catalogue import default_catalogue
from scheduler.codec.compiled import InvalidValue, Unsupported, compile_writer

from .test_codec import _strategy

pytestmark = pytest.mark.unit

CATALOGUE = default_catalogue()
VERSIONS = [v for record_type in CATALOGUE.record_types() for v in CATALOGUE.versions(record_type)]

# Values of every kind, wrong for most fields: each is put in every field in turn.
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    -(2**31) - 1,
    2**63,
    -(2**63) - 1,
    1.5,
    "",
    "text",
    "\udc80",
    b"",
    b"raw",
    bytearray(b"raw"),
    [],
    {},
    ("null", None),
    "SENT",
    "ABORT",
]


def fastavro_bytes(parsed: Any, datum: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, datum)
    return out.getvalue()


def fastavro_refuses(parsed: Any, datum: dict[str, Any]) -> bool:
    if not validate(datum, parsed, raise_errors=False):
        return True
    try:
        fastavro_bytes(parsed, datum)
    except ValueError:  # a lone surrogate: valid as a str, not writable as UTF-8
        return True
    return False


def record_of(version: Any) -> st.SearchStrategy[dict[str, Any]]:
    fields = version.schema["fields"]
    return st.fixed_dictionaries({f["name"]: _strategy(f["type"]) for f in fields})


@pytest.mark.parametrize("version", VERSIONS, ids=str)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_valid_records_are_written_byte_for_byte_as_fastavro_writes_them(version, data) -> None:
    datum = data.draw(record_of(version))
    assert compile_writer(version.parsed)(datum) == fastavro_bytes(version.parsed, datum)


@pytest.mark.parametrize("version", VERSIONS, ids=str)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_a_value_is_refused_exactly_where_fastavro_refuses_it(version, data) -> None:
    write = compile_writer(version.parsed)
    datum = data.draw(record_of(version))
    for field in version.schema["fields"]:
        for odd in ODD_VALUES:
            changed = {**datum, field["name"]: odd}
            if fastavro_refuses(version.parsed, changed):
                with pytest.raises(InvalidValue, match=field["name"]):
                    write(changed)
            elif isinstance(odd, tuple):
                continue  # fastavro's tuple notation for unions: not accepted here
            else:
                assert write(changed) == fastavro_bytes(version.parsed, changed)


def test_a_record_without_a_field_or_not_a_mapping_is_refused() -> None:
    version = CATALOGUE.latest("scheduler.DeliveryResult")
    write = compile_writer(version.parsed)
    with pytest.raises(InvalidValue, match="missing field 'app_id'"):
        write({"message_id": "m"})
    with pytest.raises(InvalidValue, match="not a valid"):
        write(["not", "a", "mapping"])


@pytest.mark.parametrize(
    "avro_type",
    [
        {"type": "array", "items": "int"},
        {"type": "map", "values": "int"},
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]},
        {"type": "long", "logicalType": "timestamp-millis"},
        "float",
        "double",
    ],
    ids=str,
)
def test_types_it_does_not_compile_are_said_so(avro_type: Any) -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "Outer", "fields": [{"name": "f", "type": avro_type}]}
    )
    with pytest.raises(Unsupported):
        compile_writer(schema)
