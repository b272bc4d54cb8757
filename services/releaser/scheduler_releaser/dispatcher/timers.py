"""The dispatcher's timer structure: held messages in due order, deduplicated (decision 3).

A heap keyed by (due_ms, message_id) holds about one ring slot of messages. `pop_due(now)`
returns every message whose due instant has come, never one that is early. The dedup key is
(app id, message id, generation, attempt): a replayed record of an attempt that is held or was
already settled is refused, while a retry (attempt + 1) or a redrive (generation + 1) passes.
Message ids are unique within an application only (a Kafka-native producer picks its own), so
the app is part of the key: another tenant's message with the same id is another message.

A parked attempt (admission.py: it waited for its app longer than the park bound, and a copy of
it went back into the ring) keeps its key; its copy, marked by the header PARKED_HEADER, is let
in once, while any other copy of the attempt (a replay, a bucket released again) is refused.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from scheduler.records import DueMessage

DedupKey = tuple[str, str, int, int]
# On the ring copy of a parked attempt: the time it already waited that does not count toward
# its app's maxEventAgeMs (decimal ms). A header, not a DueMessage field, so that a dispatcher of
# the previous version still reads the record (it does not know a newer schema's fingerprint).
PARKED_HEADER = "scheduler-parked-uncounted-ms"


@dataclass(frozen=True)
class Position:
    """Where a held message came from (so its offset can be committed once it is settled)."""

    topic: str
    partition: int
    offset: int


@dataclass(order=True)
class Held:
    due_ms: int
    message_id: str
    message: DueMessage = field(compare=False)
    position: Position | None = field(compare=False, default=None)
    # waited before, uncounted toward the max event age (a parked attempt's copy)
    uncounted_ms: int = field(compare=False, default=0)


def dedup_key(message: DueMessage) -> DedupKey:
    return (message.app_id, message.message_id, message.generation, message.attempt)


class TimerQueue:
    def __init__(self) -> None:
        # (due_ms, message_id, held): tuples compare in C, much faster than the dataclass
        self._heap: list[tuple[int, str, Held]] = []
        # key -> due_ms, for pruning: keys of held, in-flight and recently settled attempts
        self._seen: dict[DedupKey, int] = {}
        # popped and not yet settled: a copy read meanwhile must still be refused, however
        # long ago the attempt was due (an overdue one waits for the record writers first)
        self._in_flight: set[DedupKey] = set()
        # parked: their copy (with PARKED_HEADER) is let in once
        self._parked: set[DedupKey] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def seen(self, key: DedupKey) -> bool:
        return key in self._seen

    def remember(self, key: DedupKey, due_ms: int) -> None:
        """Mark an attempt as settled elsewhere (e.g. loaded from the results topic)."""
        self._seen.setdefault(key, due_ms)

    def forget(self, message: DueMessage) -> None:
        """Let this attempt in again (it was handed back after a failure to settle it)."""
        key = dedup_key(message)
        self._seen.pop(key, None)
        self._in_flight.discard(key)

    def done(self, message: DueMessage) -> None:
        """The attempt popped for firing has ended (settled, or left for a restart): its key
        stays until it is pruned."""
        self._in_flight.discard(dedup_key(message))

    def park(self, message: DueMessage) -> None:
        """The attempt popped for firing went back into the ring: let its copy in once."""
        key = dedup_key(message)
        self._in_flight.discard(key)
        self._parked.add(key)

    def push(
        self,
        message: DueMessage,
        position: Position | None = None,
        parked_uncounted_ms: int | None = None,
    ) -> bool:
        """Hold a message until its due instant. False if this attempt was seen already,
        unless this is the copy of its park (`parked_uncounted_ms` not None)."""
        key = dedup_key(message)
        if key in self._seen and not (parked_uncounted_ms is not None and key in self._parked):
            return False
        self._parked.discard(key)
        self._seen.setdefault(key, message.due_ms)
        uncounted = parked_uncounted_ms or 0
        held = Held(message.due_ms, message.message_id, message, position, uncounted)
        heapq.heappush(self._heap, (message.due_ms, message.message_id, held))
        return True

    def next_due_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int, limit: int | None = None) -> list[Held]:
        """Held messages with due_ms <= now_ms, earliest first (at most `limit`)."""
        due: list[Held] = []
        while self._heap and self._heap[0][0] <= now_ms:
            if limit is not None and len(due) >= limit:
                break
            held = heapq.heappop(self._heap)[2]
            self._in_flight.add(dedup_key(held.message))
            due.append(held)
        return due

    def prune(self, older_than_ms: int) -> int:
        """Forget settled keys due before `older_than_ms` (held and in-flight ones are kept).
        Returns count."""
        kept = {dedup_key(h.message) for _, _, h in self._heap} | self._in_flight | self._parked
        stale = [k for k, due in self._seen.items() if due < older_than_ms and k not in kept]
        for key in stale:
            del self._seen[key]
        return len(stale)
