"""Lateness as the runner sees it while the campaign runs, so the nemesis can wait for the system
to be back to steady before its next fault. With fixed gaps (10-25 s) a fault whose recovery
took longer could not be measured: the next one came first (seed 2027's 30-minute run: 24 of
76 faults). The verdict is still the checker's, from the complete facts at the end; this watch
only paces, by the same rule (`checker.steady_bound`, windows of RECOVERY_WINDOW_MS held for
HOLD_MS)."""

from __future__ import annotations

from bisect import bisect_left, insort

from chaos.checker import (
    BASELINE_MS,
    HOLD_MS,
    RECOVERY_WINDOW_MS,
    WARM_UP_TAIL_MS,
    due_ms,
    p99,
    steady_bound,
)
from chaos.workload import Ledger
from scheduler.testing.receiver import Arrivals

LAG_MIN_MS, LAG_MAX_MS = 1_000, 30_000  # how far behind now the judged window ends


class LiveLateness:
    """Lateness of the messages due in a span, read from the workload's ledger and the
    receivers' arrivals so far: a message not arrived yet is as late as it is now. Messages
    with an abort sent, redriven ones and those of the failing endpoint are left out, as the
    checker leaves them out of lateness."""

    def __init__(self, ledger: Ledger, arrivals: Arrivals) -> None:
        self._ledger = ledger
        self._arrivals = arrivals
        self._acked_read = 0
        self._arrivals_read = 0
        self._due: list[tuple[int, str]] = []  # (due ms, message id), sorted
        self._first: dict[str, int] = {}  # message id -> its first 2xx arrival, ms

    def p99(self, start_ms: int, end_ms: int, now_ms: int) -> int | None:
        """The p99 of the messages due in [start_ms, end_ms); None if none was due."""
        self._read()
        with self._ledger.lock:
            left_out = {a.message_id for a in self._ledger.aborts} | self._ledger.redriven
        lates = []
        for due, message_id in self._due[self._index(start_ms) : self._index(end_ms)]:
            if message_id not in left_out:
                lates.append(self._first.get(message_id, now_ms) - due)
        return p99(lates) if lates else None

    def _index(self, due_ms: int) -> int:
        return bisect_left(self._due, (due_ms, ""))

    def _read(self) -> None:
        with self._ledger.lock:
            acked = self._ledger.acked[self._acked_read :]
        self._acked_read += len(acked)
        for a in acked:
            if not a.flaky:
                insort(self._due, (due_ms(a), a.message_id))
        arrivals = self._arrivals.since(self._arrivals_read)
        self._arrivals_read += len(arrivals)
        for arrival in arrivals:
            if 200 <= arrival.status < 300:
                known = self._first.get(arrival.message_id)
                if known is None or arrival.received_ms < known:
                    self._first[arrival.message_id] = arrival.received_ms


class RecoveryWatch:
    """`injected(at)` when a fault starts (its bound is taken then, from the messages due
    before it); `steady(now, healed)` once a second after the heal: True once the windows of
    due instants since the heal have kept their p99 within the bound for HOLD_MS. The window
    judged ends `lag` before now (the bound, within LAG_MIN_MS..LAG_MAX_MS), so a message
    missing from it is already later than the bound allows."""

    def __init__(self, lateness: LiveLateness) -> None:
        self._lateness = lateness
        self._warm_up: int | None = None
        self.bound_ms = 0
        self._ok_since: int | None = None

    def injected(self, at_ms: int) -> None:
        if self._warm_up is None:  # the first fault: the warm-up's tail is the baseline
            self._warm_up = self._lateness.p99(at_ms - WARM_UP_TAIL_MS, at_ms, at_ms) or 0
        before = self._lateness.p99(at_ms - BASELINE_MS, at_ms, at_ms)
        _, self.bound_ms = steady_bound(before, self._warm_up)
        self._ok_since = None

    def steady(self, now_ms: int, healed_ms: int) -> bool:
        lag = min(max(self.bound_ms, LAG_MIN_MS), LAG_MAX_MS)
        start = now_ms - lag - RECOVERY_WINDOW_MS
        if start < healed_ms:
            return False
        late = self._lateness.p99(start, start + RECOVERY_WINDOW_MS, now_ms)
        if late is not None and late > self.bound_ms:
            self._ok_since = None
            return False
        if self._ok_since is None:
            self._ok_since = start
        return start - self._ok_since >= HOLD_MS
