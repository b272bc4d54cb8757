"""What arrived versus what was scheduled, for one run: lateness per message, lost, duplicated,
early. Arrivals are taken from the shared receivers run by run (other runs' ids are ignored)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from scheduler.clock import SystemClock
from scheduler.testing.receiver import Arrivals

CLOCK = SystemClock()
POLL_S = 0.2
DUPLICATE_GRACE_S = 1.5  # after the last expected arrival: time for a duplicate to show


@dataclass
class Outcome:
    planned: int
    points: list[tuple[int, int]] = field(default_factory=list)  # (sendAt ms, lateness ms)
    received_ms: list[int] = field(default_factory=list)  # first receipt per message
    lost: int = 0
    duplicates: int = 0
    early: int = 0

    @property
    def lateness(self) -> list[int]:
        return [late for _, late in self.points]

    def counts(self) -> dict[str, int]:
        return {
            "planned": self.planned,
            "delivered": len(self.points),
            "lost": self.lost,
            "duplicates": self.duplicates,
            "early": self.early,
        }


def collect(arrivals: Arrivals, planned: dict[str, int], wait_until_ms: int) -> Outcome:
    """Read arrivals until every planned message came or the (wall-clock) limit passes, then a
    short grace for duplicates."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}

    def drain() -> None:
        for a in arrivals.take():
            if a.message_id in planned:
                counts[a.message_id] += 1
                first.setdefault(a.message_id, a.received_ms)

    while len(first) < len(planned) and CLOCK.now_ms() < wait_until_ms:
        drain()
        time.sleep(POLL_S)
    time.sleep(DUPLICATE_GRACE_S)
    drain()
    out = Outcome(planned=len(planned))
    for message_id, received in first.items():
        due = planned[message_id]
        out.points.append((due, received - due))
        out.received_ms.append(received)
        out.early += received < due
    out.points.sort()
    out.lost = len(planned) - len(first)
    out.duplicates = sum(n - 1 for n in counts.values())
    return out
