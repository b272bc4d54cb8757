"""The codecs the releaser and dispatcher use, built once from the Kafka settings."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.codec import RecordCodec, registry_client
from scheduler.records import Command, DeadLetter, DeliveryResult, DueMessage, RejectedRequest
from scheduler.settings import KafkaSettings


@dataclass(frozen=True)
class Codecs:
    due: RecordCodec[DueMessage]
    result: RecordCodec[DeliveryResult]
    dead_letter: RecordCodec[DeadLetter]
    rejected: RecordCodec[RejectedRequest]
    command: RecordCodec[Command]

    @classmethod
    def build(cls, kafka: KafkaSettings) -> Codecs:
        """Single-object Avro, or the Confluent wire format with a registry.

        With a registry, subjects follow the record-name strategy (one subject per record type),
        because the ring spreads one record type over many topics.
        """
        if not kafka.schema_registry_url:
            return cls(
                RecordCodec(DueMessage),
                RecordCodec(DeliveryResult),
                RecordCodec(DeadLetter),
                RecordCodec(RejectedRequest),
                RecordCodec(Command),
            )
        registry = registry_client(kafka.schema_registry_url)
        return cls(
            RecordCodec(DueMessage, registry=registry, subject=DueMessage.AVRO_NAME),
            RecordCodec(DeliveryResult, registry=registry, subject=DeliveryResult.AVRO_NAME),
            RecordCodec(DeadLetter, registry=registry, subject=DeadLetter.AVRO_NAME),
            RecordCodec(RejectedRequest, registry=registry, subject=RejectedRequest.AVRO_NAME),
            RecordCodec(Command, registry=registry, subject=Command.AVRO_NAME),
        )
