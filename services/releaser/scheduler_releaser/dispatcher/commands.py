"""The dispatcher's view of `scheduler.commands`: which (app, message, generation) were aborted.

Message ids are unique within an application only, so an abort names its app too: one tenant's
abort never touches another tenant's message that happens to carry the same id.

Decision 5: the dispatcher does not fire while this view lags more than the cancel guard G.

The lag is measured per partition, from positive evidence only. The feed asks Kafka for the end
of every partition (the last stable offset) at instant `asked`; once the view has read a
partition up to that end, it holds every command acknowledged before `asked` there, so the
partition is fresh as of `asked`. The view's lag is the age of its stalest partition. Receiving
nothing proves nothing (a stalled fetch also receives nothing), so a view that is not confirmed
again ages, and firing stops once it is older than the guard.

Firing waits for every partition, not only the one the message's commands hash to: the key to
partition mapping belongs to the producers (their partitioner, and the partition count they saw,
which changes when partitions are added), so trusting one partition would trust a mapping the
dispatcher cannot check. Freshness per partition is what keeps this cheap: a partition busy with
one tenant's bulk abort is fresh as soon as it has read up to the end asked for, without waiting
for every partition to be at its end at the same instant.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from scheduler.records import Command, CommandKind

NEVER = -(2**62)
# Aborts are kept this many ring cycles after they were issued (the runtime prunes older ones);
# an older abort is honoured through the message record (core.py, _needs_record).
ABORTS_KEPT_CYCLES = 2


class CommandView:
    def __init__(self, now_ms: int, partitions: Iterable[int] = ()) -> None:
        self._aborted: dict[tuple[str, str, int], int] = {}  # (app, message, gen) -> issued_ms
        self._started_ms = now_ms
        self._fresh_ms: dict[int, int] = {}  # partition -> instant it was last known current
        self._position: dict[int, int] = {}  # partition -> next offset to read
        self._asked: dict[int, deque[tuple[int, int]]] = {}  # partition -> (asked_ms, end)
        self.add_partitions(partitions)

    @property
    def partitions(self) -> list[int]:
        return sorted(self._fresh_ms)

    def add_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions to read from now on: not fresh until confirmed."""
        for p in partitions:
            self._fresh_ms.setdefault(p, NEVER)
            self._asked.setdefault(p, deque())

    def apply(self, partition: int, offset: int, command: Command | None) -> None:
        """The record at `offset` was read (command None: one that could not be decoded)."""
        if command is not None and command.kind is CommandKind.ABORT:
            key = (command.app_id, command.message_id, command.generation)
            self._aborted[key] = command.issued_ms
        self._advance(partition, offset + 1)

    def read_to(self, partition: int, position: int) -> None:
        """The reader has read everything of `partition` before `position` (its position: past
        transaction markers too, which carry no command)."""
        self._advance(partition, position)

    def starts_at(self, partition: int, offset: int) -> None:
        """The reader starts `partition` at `offset` (what lies before it is not wanted)."""
        self._advance(partition, offset)

    def confirm(self, partition: int, asked_ms: int, end: int) -> None:
        """Kafka said, for a request sent at `asked_ms`, that `partition` ends at `end`."""
        if partition not in self._fresh_ms:
            return
        if self._position.get(partition, -1) >= end:
            self._fresh_ms[partition] = max(self._fresh_ms[partition], asked_ms)
        else:
            asked = self._asked[partition]
            while asked and asked[-1][1] >= end:
                asked.pop()  # a later answer with the same end supersedes it
            asked.append((asked_ms, end))

    def _advance(self, partition: int, position: int) -> None:
        if position <= self._position.get(partition, -1):
            return
        self._position[partition] = position
        asked = self._asked.get(partition)
        if not asked:
            return
        fresh = self._fresh_ms[partition]
        while asked and asked[0][1] <= position:
            fresh = max(fresh, asked.popleft()[0])
        self._fresh_ms[partition] = fresh

    def aborted(self, app_id: str, message_id: str, generation: int) -> bool:
        return (app_id, message_id, generation) in self._aborted

    def fresh_since(self, instant_ms: int) -> bool:
        """Has every partition been confirmed current at or after `instant_ms`?"""
        return bool(self._fresh_ms) and min(self._fresh_ms.values()) >= instant_ms

    def lag_ms(self, now_ms: int) -> int:
        """How old the view is: the time since its stalest partition was last known current."""
        stalest = min(self._fresh_ms.values(), default=NEVER)
        if stalest == NEVER:  # some partition never confirmed: as old as the view itself
            stalest = self._started_ms
        return max(0, now_ms - stalest)

    def prune(self, older_than_ms: int) -> None:
        stale = [k for k, issued in self._aborted.items() if issued < older_than_ms]
        for key in stale:
            del self._aborted[key]

    def __len__(self) -> int:
        return len(self._aborted)
