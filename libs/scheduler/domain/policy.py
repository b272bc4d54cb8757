"""An application's delivery policy: optional overrides of the dispatcher's global settings.

Every field is optional; None means "the service's setting" (SCHEDULER_DISPATCH_*). Stored as
JSON in `applications.delivery_policy_json` (migration 0007), so a field added later is read
as None by an older process and kept by a newer one. Bounds are checked by `validated()`; a
stored policy that breaks them (written by a newer version with wider bounds) is still used as
given, never refused at delivery time.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from scheduler.domain.backoff import Backoff

MAX_ATTEMPTS = 186  # EventBridge Scheduler's bound: 185 retries
MAX_BACKOFF_MS = 86_400_000
MIN_EVENT_AGE_MS = 1_000
MAX_EVENT_AGE_MS = 30 * 86_400_000
MIN_RATE = 0.01
MAX_RATE = 100_000.0
MAX_BURST = 100_000
MAX_CONCURRENCY = 1_000
MIN_HTTP_TIMEOUT_MS = 100
MAX_HTTP_TIMEOUT_MS = 60_000

# JSON names (the API's) of each field, in order.
_JSON_NAMES = {
    "max_attempts": "maxAttempts",
    "min_backoff_ms": "minBackoffMs",
    "max_backoff_ms": "maxBackoffMs",
    "max_event_age_ms": "maxEventAgeMs",
    "rate_per_second": "ratePerSecond",
    "rate_burst": "rateBurst",
    "rate_hold_counts_toward_age": "rateHoldCountsTowardAge",
    "max_concurrent": "maxConcurrent",
    "http_timeout_ms": "httpTimeoutMs",
}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int | None = None
    min_backoff_ms: int | None = None
    max_backoff_ms: int | None = None
    # A message older than this (from its due instant) goes FAILED without another attempt.
    max_event_age_ms: int | None = None
    rate_per_second: float | None = None
    rate_burst: int | None = None  # None: one second's worth, at least 1
    # Whether time spent waiting for the rate limit counts toward max_event_age_ms.
    rate_hold_counts_toward_age: bool = False
    max_concurrent: int | None = None  # REST deliveries in flight at once, per dispatcher
    http_timeout_ms: int | None = None

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_POLICY

    def validated(self) -> DeliveryPolicy:
        """This policy, or PolicyError naming the first field out of bounds."""
        _bounded("maxAttempts", self.max_attempts, 1, MAX_ATTEMPTS)
        _bounded("minBackoffMs", self.min_backoff_ms, 0, MAX_BACKOFF_MS)
        _bounded("maxBackoffMs", self.max_backoff_ms, 0, MAX_BACKOFF_MS)
        if (
            self.min_backoff_ms is not None
            and self.max_backoff_ms is not None
            and self.min_backoff_ms > self.max_backoff_ms
        ):
            raise PolicyError("minBackoffMs must not exceed maxBackoffMs")
        _bounded("maxEventAgeMs", self.max_event_age_ms, MIN_EVENT_AGE_MS, MAX_EVENT_AGE_MS)
        if self.rate_per_second is not None and (
            not math.isfinite(self.rate_per_second)
            or not MIN_RATE <= self.rate_per_second <= MAX_RATE
        ):
            raise PolicyError(f"ratePerSecond must be between {MIN_RATE} and {MAX_RATE:g}")
        _bounded("rateBurst", self.rate_burst, 1, MAX_BURST)
        if self.rate_burst is not None and self.rate_per_second is None:
            raise PolicyError("rateBurst needs ratePerSecond")
        _bounded("maxConcurrent", self.max_concurrent, 1, MAX_CONCURRENCY)
        _bounded("httpTimeoutMs", self.http_timeout_ms, MIN_HTTP_TIMEOUT_MS, MAX_HTTP_TIMEOUT_MS)
        return self

    def burst(self) -> int:
        """Deliveries allowed at once after an idle second (the bucket's depth)."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1, math.ceil(self.rate_per_second or 1))

    def backoff(self, default: Backoff) -> Backoff:
        """The retry schedule: this policy's fields over the service's."""
        if (self.max_attempts, self.min_backoff_ms, self.max_backoff_ms) == (None, None, None):
            return default
        base = default.base_ms if self.min_backoff_ms is None else self.min_backoff_ms
        ceiling = default.max_delay_ms if self.max_backoff_ms is None else self.max_backoff_ms
        return dataclasses.replace(
            default,
            max_attempts=self.max_attempts or default.max_attempts,
            base_ms=base,
            max_delay_ms=max(base, ceiling),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's form: only the fields set."""
        out: dict[str, Any] = {}
        for field, name in _JSON_NAMES.items():
            value = getattr(self, field)
            if value is not None and not (field == "rate_hold_counts_toward_age" and not value):
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeliveryPolicy:
        """The API's form, unknown names ignored (a newer version's fields), not validated."""
        names = {name: field for field, name in _JSON_NAMES.items()}
        values = {names[k]: v for k, v in data.items() if k in names and v is not None}
        return cls(**values)

    def to_column(self) -> str | None:
        return None if self.is_default else json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_column(cls, text: str | None) -> DeliveryPolicy:
        return cls.from_json(json.loads(text)) if text else DEFAULT_POLICY


def _bounded(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise PolicyError(f"{name} must be between {low:g} and {high:g}")


DEFAULT_POLICY = DeliveryPolicy()
