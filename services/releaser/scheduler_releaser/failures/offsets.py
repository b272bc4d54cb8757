"""Which dead-letter offsets may be committed while notices finish out of order.

Notices of different applications finish in any order (one app's endpoint may be down for
minutes while another's answers at once). An offset is committed only once every dead letter
before it in its partition is finished (accepted, skipped or given up), so a restart never
skips an unfinished notice: it sends again the finished ones after the oldest unfinished one
(at least once). Per partition: the received offsets in order, the finished ones among them,
and the commit point moved over the finished prefix.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # received, in offset order
    finished: set[int] = field(default_factory=set)  # finished among `pending`
    commit_point: int | None = None  # the next offset to read after a restart
    committed: int | None = None  # the last commit point handed out and confirmed


class NoticeOffsets:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    def received(self, tp: TP, offset: int) -> None:
        part = self._parts.setdefault(tp, _Partition())
        if part.pending and offset <= part.pending[-1]:
            raise ValueError(f"offset {offset} of {tp} received out of order")
        part.pending.append(offset)

    def finished(self, tp: TP, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None or (part.commit_point is not None and offset < part.commit_point):
            return  # a partition revoked meanwhile, or finished before
        part.finished.add(offset)
        while part.pending and part.pending[0] in part.finished:
            done = part.pending.popleft()
            part.finished.discard(done)
            part.commit_point = done + 1

    def passed(self, tp: TP, position: int) -> None:
        """The consumer read up to `position` (past transaction markers, which carry no dead
        letter): with nothing unfinished there, that is the commit point (the lag reads 0)."""
        part = self._parts.setdefault(tp, _Partition())
        if not part.pending and (part.commit_point is None or position > part.commit_point):
            part.commit_point = position

    def unfinished(self) -> int:
        return sum(len(p.pending) - len(p.finished) for p in self._parts.values())

    def commits(self) -> dict[TP, int]:
        """Commit points that moved since they were last confirmed."""
        return {
            tp: part.commit_point
            for tp, part in self._parts.items()
            if part.commit_point is not None and part.commit_point != part.committed
        }

    def confirm(self, commits: dict[TP, int]) -> None:
        for tp, offset in commits.items():
            part = self._parts.get(tp)
            if part is not None and (part.committed is None or offset > part.committed):
                part.committed = offset

    def commit_point(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return None if part is None else part.commit_point

    def restart_point(self, tp: TP) -> int | None:
        """Where a restart would read `tp` from: the commit point, else (nothing finished yet)
        the first offset received, which is where the committed offset let this one start."""
        part = self._parts.get(tp)
        if part is None:
            return None
        if part.commit_point is not None:
            return part.commit_point
        return part.pending[0] if part.pending else None

    def forget(self, tps: Iterable[TP]) -> None:
        """Revoked partitions: their next owner reads them from the committed offset."""
        for tp in tps:
            self._parts.pop(tp, None)

    def partitions(self) -> list[TP]:
        return list(self._parts)
