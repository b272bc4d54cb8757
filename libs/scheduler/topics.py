"""The system's Kafka topics, declared once. Physical names come from settings, never literals."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from scheduler.settings import KafkaSettings, SchedulingSettings

# Results younger than this are never compacted: a restart's reload sees every attempt's result
# of that span, not only its message's latest (the dispatcher relies on it, core.py).
RESULTS_MIN_COMPACTION_LAG_MS = 3_600_000


class Topic(Enum):
    REQUESTS = "requests"
    COMMANDS = "commands"
    RESULTS = "results"
    REJECTED = "rejected"
    DEAD_LETTER = "dead-letter"
    RELEASER_LEASE = "releaser-lease"  # one partition, no data: its owner leads the releasers


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


class Topics:
    """Physical topic names and their creation specs for one deployment."""

    def __init__(self, kafka: KafkaSettings, scheduling: SchedulingSettings) -> None:
        self._kafka = kafka
        self.ring = scheduling.ring(kafka)

    def name(self, topic: Topic) -> str:
        return f"{self._kafka.topic_prefix}{topic.value}"

    @property
    def requests(self) -> str:
        return self.name(Topic.REQUESTS)

    @property
    def commands(self) -> str:
        return self.name(Topic.COMMANDS)

    @property
    def results(self) -> str:
        return self.name(Topic.RESULTS)

    @property
    def rejected(self) -> str:
        return self.name(Topic.REJECTED)

    @property
    def dead_letter(self) -> str:
        return self.name(Topic.DEAD_LETTER)

    @property
    def releaser_lease(self) -> str:
        return self.name(Topic.RELEASER_LEASE)

    def specs(self) -> list[TopicSpec]:
        k = self._kafka
        durable = {"min.insync.replicas": str(min(k.min_insync_replicas, k.replication_factor))}

        def retained(ms: int) -> dict[str, str]:
            return {**durable, "cleanup.policy": "delete", "retention.ms": str(ms)}

        specs = [
            TopicSpec(self.requests, k.requests_partitions, retained(k.requests_retention_ms)),
            TopicSpec(self.commands, k.commands_partitions, retained(k.requests_retention_ms)),
            TopicSpec(
                self.results,
                k.results_partitions,
                # Keys are unique per message, so compaction alone would keep one result per
                # message forever; retention bounds it (docs/OPERATIONS.md, "Topics").
                {
                    **durable,
                    "cleanup.policy": "compact,delete",
                    "retention.ms": str(k.results_retention_ms),
                    "min.compaction.lag.ms": str(RESULTS_MIN_COMPACTION_LAG_MS),
                },
            ),
            TopicSpec(self.rejected, 1, retained(k.operator_retention_ms)),
            TopicSpec(self.dead_letter, 1, retained(k.operator_retention_ms)),
            TopicSpec(self.releaser_lease, 1, retained(3_600_000)),
        ]
        specs += [
            TopicSpec(name, k.due_partitions, retained(k.due_retention_ms))
            for name in self.ring.topics()
        ]
        return specs
