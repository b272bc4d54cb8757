"""What the dispatcher core needs from the outside world, as small Protocols.

The Kafka runtime implements them with confluent-kafka; unit tests use in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .refusals import Refusal
from .timers import Position


@dataclass(frozen=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    destination: bool = False  # a KAFKA app's record: the destination may refuse it alone


# Called on the event loop with the commit instant (epoch ms); a transaction's callbacks in one go.
OnCommitted = Callable[[int], None]
OnRefused = Callable[[Refusal], None]  # the destination refused it: settle the attempt anew


class Sink(Protocol):
    def emit(
        self,
        records: list[OutRecord],
        settled: Position | None,
        on_committed: OnCommitted | None = None,
        not_before_ms: int | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        """Write `records` and mark `settled` as done, atomically (one Kafka transaction),
        committed no earlier than `not_before_ms` (epoch ms) by the sink's clock. If the
        destination refuses its record, nothing of this emit is written: `on_refused` is
        called instead and settles the attempt with a new emit (same `settled`)."""


class TopicCheck(Protocol):
    async def exists(self, topic: str) -> bool:
        """Does this destination topic exist (cached)?"""

    def forget(self, topic: str) -> None:
        """The broker said the topic is gone: ask again next time."""


class RecordsCoverage(Protocol):
    @property
    def covers_ms(self) -> int:
        """Every delivery result committed before this instant is in the message records."""
