"""Up to which instant every delivery result is in the message records.

A ring record can come back long after its attempt was settled (a bucket released again after
an outage, a replayed request, a direct send beside a release). Within the dedup window the
timer queue remembers the settled attempt (and a restart reloads the recent results); past it,
the fire-time record check is what stops a second delivery. The records are written from the
results by the record writer, a separate consumer that may lag: a late duplicate read while the
writer was behind used to find the record still QUEUED and fire again.

So a *late* attempt (due more than the dedup window ago) fires only once the record writers
have written every result committed before its firing began (`covers_ms` at or after that
instant): then a settled earlier copy shows in the record (SENT, FAILED, or a later attempt),
for as long as the ring retains the duplicate. The evidence is positive, as for the commands
view: every second a worker thread asks the results topic's ends (last stable offset) at `t`;
once the record writers' committed offsets reach those ends, every result committed before `t`
is in the records (`RecordsProgressFeed` in feeds.py asks).
"""

from __future__ import annotations

from collections import deque

from .commands import NEVER

MAX_ASKED = 600  # questions kept while the writers are behind (10 min at one a second)


class RecordsProgress:
    def __init__(self) -> None:
        self.covers_ms = NEVER
        self._asked: deque[tuple[int, dict[int, int]]] = deque(maxlen=MAX_ASKED)

    def observe(self, asked_ms: int, ends: dict[int, int], committed: dict[int, int]) -> None:
        """At `asked_ms` the results partitions holding records ended at `ends`; the writers'
        committed offsets, read afterwards, are `committed` (a partition never committed is
        missing)."""
        self._asked.append((asked_ms, ends))
        while self._asked and all(
            committed.get(p, -1) >= end for p, end in self._asked[0][1].items()
        ):
            self.covers_ms = max(self.covers_ms, self._asked.popleft()[0])

    def lag_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.covers_ms) if self.covers_ms != NEVER else now_ms
