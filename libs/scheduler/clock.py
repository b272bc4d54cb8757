"""The one place that reads the wall clock. Everything else receives a `Clock`.

All times inside the system are integer epoch milliseconds UTC.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current wall-clock time, epoch milliseconds UTC."""

    def monotonic_ms(self) -> float:
        """A monotonic reading for measuring intervals (never goes backwards)."""


class SystemClock:
    """The host clock. 'Never early' trusts it: run NTP on every host."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000  # noqa: TID251 - the sanctioned wall-clock read

    def monotonic_ms(self) -> float:
        return time.monotonic() * 1000.0


class ManualClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now = start_ms
        self._mono = 0.0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def monotonic_ms(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a manual clock only moves forward")
        with self._lock:
            self._now += ms
            self._mono += ms

    def set(self, now_ms: int) -> None:
        with self._lock:
            if now_ms < self._now:
                raise ValueError("a manual clock only moves forward")
            self._mono += now_ms - self._now
            self._now = now_ms
