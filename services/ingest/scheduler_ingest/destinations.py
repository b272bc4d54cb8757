"""Does a KAFKA application's destination topic exist? The port, its Kafka adapter, a fake.

Asked when an application of type KAFKA is created or its endpoint changed: the dispatcher
never creates topics (`allow.auto.create.topics` is off), so an app on a missing topic would
fail its first message at once. The answer is 400 `unknown_topic` unless the operator allows
missing topics (SCHEDULER_INGEST_ALLOW_MISSING_KAFKA_TOPICS: created, with a warning).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# The longest an app creation waits for the cluster's metadata (then 503, retry).
TOPIC_CHECK_TIMEOUT_S = 5.0


class TopicCheckError(RuntimeError):
    """The cluster did not answer the metadata request in time."""


class TopicDirectory(Protocol):
    def exists(self, topic: str, timeout_s: float) -> bool:
        """Blocking (run it off the event loop); `TopicCheckError` when Kafka does not answer."""


class KafkaTopicDirectory:
    def __init__(self, config: dict[str, Any]) -> None:
        self._admin = AdminClient(config)

    def exists(self, topic: str, timeout_s: float) -> bool:
        # The whole cluster's topic list, not a request naming the topic: a metadata request
        # for one topic auto-creates it on brokers with auto.create.topics.enable.
        try:
            metadata = self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise TopicCheckError(f"Kafka did not answer: {exc}") from exc
        found = metadata.topics.get(topic)
        return found is not None and found.error is None


class FakeTopicDirectory:
    """Knows the topics it is given; `down` makes every check fail as an unreachable cluster."""

    def __init__(self, existing: Iterable[str] = ()) -> None:
        self.existing = set(existing)
        self.down = False
        self.asked: list[str] = []

    def exists(self, topic: str, timeout_s: float) -> bool:
        self.asked.append(topic)
        if self.down:
            raise TopicCheckError("Kafka did not answer: (fake) timed out")
        return topic in self.existing
