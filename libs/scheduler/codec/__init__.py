"""Avro codecs, separate from transport.

- ``SchemaCatalogue`` / ``default_catalogue()``: every version of every schema in ``schemas/``.
- ``AvroCodec``: dict <-> bytes for one record type; writes single-object encoding, or the
  Confluent wire format when given a registry; reads both.
- ``RecordCodec[T]``: the same for the typed classes of ``scheduler.records``.
- Errors: ``DecodeError`` subclasses mean "reject this record"; ``RegistryError`` means "retry".
"""

from .avro import (
    AvroCodec,
    WireFormat,
    definition_subject,
    registry_client,
    value_subject,
)
from .catalogue import Example, SchemaCatalogue, SchemaVersion, default_catalogue, fullname
from .errors import (
    CatalogueError,
    CodecError,
    DecodeError,
    IncompatibleSchema,
    InvalidRecord,
    MalformedRecord,
    NotAvro,
    RegistryError,
    TruncatedRecord,
    UnknownSchema,
)
from .typed import AvroRecord, RecordCodec

__all__ = [
    "AvroCodec",
    "AvroRecord",
    "CatalogueError",
    "CodecError",
    "DecodeError",
    "Example",
    "IncompatibleSchema",
    "InvalidRecord",
    "MalformedRecord",
    "NotAvro",
    "RecordCodec",
    "RegistryError",
    "SchemaCatalogue",
    "SchemaVersion",
    "TruncatedRecord",
    "UnknownSchema",
    "WireFormat",
    "default_catalogue",
    "definition_subject",
    "fullname",
    "registry_client",
    "value_subject",
]
