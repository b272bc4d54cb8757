"""What was scheduled versus what arrived: lost, early, duplicated, lateness percentiles."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.support.receiver import Arrival


@dataclass(frozen=True)
class Planned:
    message_id: str
    send_at_ms: int
    destination: str  # "rest" | "kafka"
    scheduled_ms: int  # when the client got its acknowledgement (a past sendAt means "now")


@dataclass
class Ledger:
    planned: dict[str, Planned] = field(default_factory=dict)

    def add(self, planned: Planned) -> None:
        self.planned[planned.message_id] = planned

    def __len__(self) -> int:
        return len(self.planned)

    def report(self, arrivals: list[Arrival]) -> Report:
        ours = [a for a in arrivals if a.message_id in self.planned]
        counts = Counter(a.message_id for a in ours)
        first: dict[str, Arrival] = {}
        for a in sorted(ours, key=lambda a: a.received_ms):
            first.setdefault(a.message_id, a)
        early = sorted(
            a.message_id for a in ours if a.received_ms < self.planned[a.message_id].send_at_ms
        )
        # Lateness from the due instant; a past sendAt is due when it was acknowledged.
        lateness = sorted(
            a.received_ms
            - max(self.planned[m].send_at_ms, min(self.planned[m].scheduled_ms, a.received_ms))
            for m, a in first.items()
        )
        dup_by_dest: Counter[str] = Counter()
        for m, n in counts.items():
            if n > 1:
                dup_by_dest[self.planned[m].destination] += n - 1
        return Report(
            planned=len(self.planned),
            delivered=len(first),
            lost=sorted(set(self.planned) - set(first)),
            early=early,
            duplicates=dict(dup_by_dest),
            lateness_ms=lateness,
        )


def percentile(ordered: list[int], q: float) -> int:
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Report:
    planned: int
    delivered: int
    lost: list[str]
    early: list[str]
    duplicates: dict[str, int]  # destination -> extra deliveries
    lateness_ms: list[int]

    def summary(self) -> str:
        late = self.lateness_ms
        return (
            f"planned {self.planned}, delivered {self.delivered}, lost {len(self.lost)},"
            f" early {len(self.early)}, duplicates {self.duplicates or 0};"
            f" lateness p50 {percentile(late, 0.5)} ms, p99 {percentile(late, 0.99)} ms,"
            f" max {late[-1] if late else 0} ms"
        )
