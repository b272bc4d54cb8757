"""Avro binary encoding of the project's records, compiled once per schema.

fastavro's `validate` followed by `schemaless_writer` made encoding one DeliveryResult take 15 µs
on this project's machine: about a quarter of the dispatcher's main thread in a hotspot (py-spy),
a tenth of the gateway's on the batch route. `compile_writer` turns a parsed schema into one
function per field that checks its value as `fastavro.validation.validate` does and writes it
as `schemaless_writer` does, in a fraction of the time (schemas/README.md, "Wire format").
tests/unit/test_compiled_writer.py holds it to fastavro: the same bytes for generated records of
every schema version, and a refusal wherever `validate` refuses.

Supported: records, null, boolean, int, long, string, bytes, enums and unions of these (the
first branch the value fits, as `validate` picks it). `compile_writer` raises `Unsupported` for
anything else, and the caller uses fastavro for that schema. Union values in fastavro's tuple
notation are not accepted: the project's records never use it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

Encoder = Callable[[Any], bytes]
_SMALL = tuple(bytes([n]) for n in range(128))


class Unsupported(ValueError):
    """The schema uses a type this writer does not compile."""


class InvalidValue(ValueError):
    """A value does not fit its schema; the message names the field."""


def compile_writer(schema: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes]:
    """The encoder of a parsed record schema (fastavro.parse_schema). Its argument must hold
    every field (defaults already filled in); it raises InvalidValue for a value that does
    not fit."""
    if schema.get("type") != "record":
        raise Unsupported("only a record schema is compiled")
    return _record(schema)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _integer(v: Any, low: int, high: int) -> int | None:
    if type(v) is not int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            return None
        v = int(v)
    return v if low <= v <= high else None


def _encoder(schema: Any, path: str) -> Encoder:
    if isinstance(schema, list):
        return _union(schema, path)
    if isinstance(schema, str) and schema in _PRIMITIVES:
        return _PRIMITIVES[schema](path)
    if isinstance(schema, dict) and "logicalType" not in schema:
        kind = schema.get("type")
        if kind == "enum":
            return _enum(schema["symbols"], path)
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind](path)
    # nested records, arrays, maps, fixed, named references, logical types
    raise Unsupported(f"{path or 'record'}: {schema!r:.80}")


def describe_invalid(path: str, v: Any, kind: Any) -> str:
    """A value its schema refuses, as both writers name it: field, value, type, schema type."""
    shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
    return f"{path or 'record'}: {shown} ({type(v).__name__}) is not a valid {kind}"


def _bad(path: str, v: Any, kind: str) -> InvalidValue:
    return InvalidValue(describe_invalid(path, v, kind))


def _null(path: str) -> Encoder:
    def encode(v: Any) -> bytes:
        if v is not None:
            raise _bad(path, v, "null")
        return b""

    return encode


def _boolean(path: str) -> Encoder:
    def encode(v: Any) -> bytes:
        if v is True:
            return b"\x01"
        if v is False:
            return b"\x00"
        raise _bad(path, v, "boolean")

    return encode


def _integer_encoder(kind: str, low: int, high: int) -> Callable[[str], Encoder]:
    def factory(path: str) -> Encoder:
        def encode(v: Any) -> bytes:
            n = _integer(v, low, high)
            if n is None:
                raise _bad(path, v, kind)
            return _zigzag(n)

        return encode

    return factory


def _string(path: str) -> Encoder:
    def encode(v: Any) -> bytes:
        if not isinstance(v, str):
            raise _bad(path, v, "string")
        try:
            data = v.encode()
        except UnicodeEncodeError as exc:
            raise InvalidValue(f"{path}: cannot encode {v!r} as UTF-8 ({exc.reason})") from None
        return _zigzag(len(data)) + data

    return encode


def _bytes(path: str) -> Encoder:
    def encode(v: Any) -> bytes:
        if not isinstance(v, bytes | bytearray):
            raise _bad(path, v, "bytes")
        return _zigzag(len(v)) + bytes(v)

    return encode


_PRIMITIVES: dict[str, Callable[[str], Encoder]] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer_encoder("int", INT_MIN, INT_MAX),
    "long": _integer_encoder("long", LONG_MIN, LONG_MAX),
    "string": _string,
    "bytes": _bytes,
}


def _enum(symbols: list[str], path: str) -> Encoder:
    index = {symbol: _zigzag(i) for i, symbol in enumerate(symbols)}

    def encode(v: Any) -> bytes:
        try:
            return index[v]
        except (KeyError, TypeError):
            raise _bad(path, v, f"enum of {symbols}") from None

    return encode


def _union(branches: list[Any], path: str) -> Encoder:
    encoders = [(_zigzag(i), _encoder(branch, path)) for i, branch in enumerate(branches)]
    if len(branches) == 2 and "null" in branches:
        # The common [null, X]: None is the null branch, anything else must fit X.
        null_first = branches[0] == "null"
        (null_tag, _), (other_tag, other) = encoders if null_first else encoders[::-1]

        def optional(v: Any) -> bytes:
            return null_tag if v is None else other_tag + other(v)

        return optional

    def encode(v: Any) -> bytes:
        for tag, branch in encoders:
            try:
                return tag + branch(v)
            except InvalidValue:
                continue
        raise _bad(path, v, f"union of {branches}")

    return encode


def _record(schema: Mapping[str, Any]) -> Encoder:
    """The top-level record (nested records are not compiled: `_encoder`)."""
    fields = [(f["name"], _encoder(f["type"], f["name"])) for f in schema["fields"]]

    def encode(v: Any) -> bytes:
        if not isinstance(v, Mapping):
            raise _bad("", v, schema.get("name", "record"))
        try:
            return b"".join([encoder(v[name]) for name, encoder in fields])
        except KeyError as exc:
            raise InvalidValue(f"record: missing field {exc.args[0]!r}") from None

    return encode
