"""``RecordCodec[T]``: typed records <-> bytes, so services never handle dicts or bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

from .avro import AvroCodec, WireFormat
from .catalogue import SchemaCatalogue

if TYPE_CHECKING:  # the registry client pulls in an OAuth stack (~0.3 s of imports)
    from confluent_kafka.schema_registry import SchemaRegistryClient


class AvroRecord(Protocol):
    """What ``scheduler.records`` classes provide."""

    AVRO_NAME: ClassVar[str]

    def to_record(self) -> dict[str, Any]: ...

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self: ...


T = TypeVar("T", bound=AvroRecord)


class RecordCodec(Generic[T]):
    """Encodes and decodes one record class, e.g. ``RecordCodec(ScheduleRequest)``.

    The keyword arguments are those of ``AvroCodec``; ``avro`` is the underlying dict codec.
    """

    def __init__(
        self,
        record_class: type[T],
        *,
        catalogue: SchemaCatalogue | None = None,
        registry: SchemaRegistryClient | None = None,
        subject: str | None = None,
        writer_version: int | None = None,
    ) -> None:
        self.record_class = record_class
        self.avro = AvroCodec(
            record_class.AVRO_NAME,
            catalogue=catalogue,
            registry=registry,
            subject=subject,
            writer_version=writer_version,
        )

    @property
    def wire_format(self) -> WireFormat:
        return self.avro.wire_format

    def encode(self, obj: T) -> bytes:
        """Raises ``InvalidRecord`` if a value does not fit the schema (e.g. int out of range)."""
        return self.avro.encode(obj.to_record())

    def decode(self, data: bytes) -> T:
        """Raises ``DecodeError`` (reject the record) or ``RegistryError`` (retry)."""
        return self.record_class.from_record(self.avro.decode(data))
