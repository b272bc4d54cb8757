"""Which offsets may be committed when records are settled out of offset order (decision 6).

Messages fire in due order, not offset order. An offset may be committed only when every record
before it in its partition has been settled (fired, skipped or handed back as a retry), so a
crash never skips an unsettled record. Per partition we keep the received offsets in order and
advance the commit point over the settled prefix.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .timers import Position

TP = tuple[str, int]


@dataclass
class _Partition:
    pending: deque[tuple[int, int]] = field(default_factory=deque)  # (offset, received_ms)
    settled: set[int] = field(default_factory=set)
    commit_point: int | None = None  # next offset to read after a restart
    committed: int | None = None  # last commit point handed out by `take_commits`
    # Results since `floor_ms` were loaded at start because an earlier incarnation may have
    # settled records of this partition past its commit point; until the commit point passes
    # `floor_until` (the partition's end at start) the commit metadata must still say so.
    floor_ms: int | None = None
    floor_until: int = 0


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    def start_at(
        self,
        topic: str,
        partition: int,
        offset: int,
        floor_ms: int | None = None,
        floor_until: int = 0,
    ) -> None:
        """A partition assigned at `offset`: committed (again) with the first transaction.

        `floor_ms`/`floor_until`: see `_Partition`."""
        part = self._parts.setdefault((topic, partition), _Partition())
        if part.commit_point is None and not part.pending:
            part.commit_point = offset
        part.floor_ms, part.floor_until = floor_ms, floor_until

    def received(self, topic: str, partition: int, offset: int, now_ms: int) -> None:
        self._parts.setdefault((topic, partition), _Partition()).pending.append((offset, now_ms))

    def settled(self, topic: str, partition: int, offset: int) -> None:
        part = self._parts[(topic, partition)]
        if part.commit_point is not None and offset < part.commit_point:
            return  # settled before (a refused attempt settles with its second emit)
        part.settled.add(offset)
        while part.pending and part.pending[0][0] in part.settled:
            done, _ = part.pending.popleft()
            part.settled.discard(done)
            part.commit_point = done + 1

    def unsettled(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())

    def oldest_unsettled_received_ms(self, default_ms: int) -> int:
        """Receipt time of the oldest record not yet settled (results since then matter)."""
        times = [p.pending[0][1] for p in self._parts.values() if p.pending]
        return min(times, default=default_ms)

    def take_commits(
        self, now_ms: int, every: bool = False, settling: Iterable[Position] = ()
    ) -> dict[TP, tuple[int, int]]:
        """Commit points that moved since the last call (`every`: all known ones), each with
        its metadata: the instant since which results matter for a restart that reads the
        partition from there (the receipt of the oldest unsettled record, or the floor).

        `settling`: positions counted as settled, without marking them (the transaction that
        settles them may still take some out); `settled()` marks them once it committed."""
        extra: dict[TP, set[int]] = {}
        for p in settling:
            extra.setdefault((p.topic, p.partition), set()).add(p.offset)
        points: dict[TP, int | None] = {}
        unsettled_since: list[int] = []
        for tp, part in self._parts.items():
            point, first_unsettled = part.commit_point, None
            done = extra.get(tp, set())
            for offset, received_ms in part.pending:
                if offset not in part.settled and offset not in done:
                    first_unsettled = received_ms
                    break
                point = offset + 1
            points[tp] = point
            if first_unsettled is not None:
                unsettled_since.append(first_unsettled)
        oldest = min(unsettled_since, default=now_ms)
        moved: dict[TP, tuple[int, int]] = {}
        for tp, part in self._parts.items():
            point = points[tp]
            if point is None or (point == part.committed and not every):
                continue
            since = oldest
            if part.floor_ms is not None and point < part.floor_until:
                since = min(since, part.floor_ms)
            moved[tp] = (point, since)
        return moved

    def confirm(self, commits: dict[TP, tuple[int, int]]) -> None:
        """The commits returned by `take_commits` are durable now."""
        for tp, (offset, _) in commits.items():
            part = self._parts[tp]
            if part.committed is None or offset > part.committed:
                part.committed = offset
            if part.floor_ms is not None and offset >= part.floor_until:
                part.floor_ms = None  # caught up past what an earlier incarnation read
