"""Typed codec errors.

``DecodeError`` and its subclasses mean "these bytes are not a record we can read": a consumer
sends the record to ``scheduler.rejected`` and moves on. ``RegistryError`` means the schema
registry could not be reached or failed: transient, so a consumer retries instead of rejecting.
``InvalidRecord`` is a bug on the encoding side; ``CatalogueError`` a broken ``schemas/`` tree.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class of every codec error."""


class DecodeError(CodecError):
    """The bytes cannot be decoded into a record of the expected type: reject the record."""


class NotAvro(DecodeError):
    """The first bytes are neither the single-object magic C3 01 nor the Confluent magic 00."""


class MalformedRecord(DecodeError):
    """The header is fine but the body is not a valid encoding for the writer schema."""


class TruncatedRecord(MalformedRecord):
    """The header or the body ends before the record is complete."""


class UnknownSchema(DecodeError):
    """The writer schema (fingerprint or registry id) is not known."""


class IncompatibleSchema(DecodeError):
    """The writer schema is known but is another record type or cannot be resolved to the reader."""


class InvalidRecord(CodecError):
    """A record to encode does not match the schema (missing or unknown field, wrong type)."""


class RegistryError(CodecError):
    """The schema registry failed (unreachable, 5xx, refused a registration): retry."""


class CatalogueError(CodecError):
    """The schemas/ tree is inconsistent (bad file name, clashing named types, bad example)."""
