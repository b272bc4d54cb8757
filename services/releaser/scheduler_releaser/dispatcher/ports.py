"""What the dispatcher core needs from the outside world, as small Protocols.

The Kafka runtime implements them with confluent-kafka; unit tests use in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .timers import Position


@dataclass(frozen=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


OnCommitted = Callable[[int], None]  # called with the commit instant (epoch ms)


class Sink(Protocol):
    def emit(
        self,
        records: list[OutRecord],
        settled: Position | None,
        on_committed: OnCommitted | None = None,
        not_before_ms: int | None = None,
    ) -> None:
        """Write `records` and mark `settled` as done, atomically (one Kafka transaction),
        committed no earlier than `not_before_ms` (epoch ms) by the sink's clock."""


class TopicCheck(Protocol):
    async def exists(self, topic: str) -> bool:
        """Does this destination topic exist (cached)?"""
