"""Retry schedule: exponential backoff with bounded, deterministic jitter."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    max_attempts: int = 5
    base_ms: int = 1_000
    factor: float = 2.0
    max_delay_ms: int = 300_000
    jitter: float = 0.2  # +/- this fraction of the delay

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_ms < 0 or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("invalid backoff parameters")

    def delay_ms(self, failed_attempt: int, unit_random: float = 0.5) -> int:
        """Delay before the attempt after `failed_attempt` (1-based).

        `unit_random` in [0, 1) picks the jitter; pass a seeded draw, 0.5 means no jitter.
        """
        if failed_attempt < 1:
            raise ValueError("attempts are numbered from 1")
        raw = min(self.base_ms * self.factor ** (failed_attempt - 1), float(self.max_delay_ms))
        spread = raw * self.jitter * (2.0 * unit_random - 1.0)
        return max(0, min(self.max_delay_ms, round(raw + spread)))

    def next_due_ms(self, failed_attempt: int, now_ms: int, unit_random: float = 0.5) -> int | None:
        """Due instant of the next attempt, or None when `failed_attempt` was the last one."""
        if failed_attempt >= self.max_attempts:
            return None
        return now_ms + self.delay_ms(failed_attempt, unit_random)
