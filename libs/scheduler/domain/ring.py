"""The ring of due-minute topics (ARCHITECTURE decision 4).

A fixed ring of `size` topics, each one slot wide (one minute by default): the topic for a due
instant is slot (due // slot_ms) % size. Topics are created once by setup and reused every cycle;
each record carries its due time, so a record of an older cycle is still recognised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Ring:
    prefix: str  # e.g. "scheduler.due."
    size: int = 60
    slot_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.size < 3:
            raise ValueError("the ring needs at least 3 slots (current, next and one spare)")
        if self.slot_ms <= 0:
            raise ValueError("slot width must be positive")

    @property
    def cycle_ms(self) -> int:
        return self.size * self.slot_ms

    def slot_of(self, due_ms: int) -> int:
        return (due_ms // self.slot_ms) % self.size

    def slot_start(self, due_ms: int) -> int:
        """Start of the slot window (the due minute) that contains `due_ms`."""
        return due_ms - due_ms % self.slot_ms

    def topic_for_slot(self, slot: int) -> str:
        if not 0 <= slot < self.size:
            raise ValueError(f"slot {slot} is outside the ring of {self.size}")
        return f"{self.prefix}{slot:0{len(str(self.size - 1))}d}"

    def topic_for(self, due_ms: int) -> str:
        return self.topic_for_slot(self.slot_of(due_ms))

    def topic_for_send(self, due_ms: int, now_ms: int) -> str:
        """Where a message produced now goes: its due slot, or the current slot if it is already
        past due (the dispatcher reads only the current and next slots, so a past slot might not
        be read before the ring comes round again). The record keeps its real due time."""
        return self.topic_for(max(due_ms, now_ms))

    def slot_of_topic(self, topic: str) -> int:
        """Inverse of `topic_for_slot`; raises ValueError for a name that is not in this ring."""
        width = len(str(self.size - 1))
        match = re.fullmatch(re.escape(self.prefix) + rf"(\d{{{width}}})", topic)
        if match is None or int(match[1]) >= self.size:
            raise ValueError(f"{topic!r} is not a topic of the ring {self.prefix}*")
        return int(match[1])

    def topics(self) -> list[str]:
        return [self.topic_for_slot(slot) for slot in range(self.size)]
