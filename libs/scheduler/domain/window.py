"""Flexible time windows: deliver at a deterministic instant within [sendAt, sendAt + window].

A window spreads messages asked for the same instant (every report at 09:00) over a span the
client accepts. The instant is chosen once, when the message is created, from its id: the same
message (an idempotent retry, a replayed occurrence) always gets the same instant, and it is
that instant the message is stored, placed, guarded and measured with (lateness counts from
it). A process that does not know windows would deliver at the window's start, which is inside
it.
"""

from __future__ import annotations

import hashlib

from scheduler.domain.errors import ValidationError

MAX_WINDOW_MS = 86_400_000  # one day, EventBridge Scheduler's bound (1,440 minutes)
INVALID_WINDOW = "invalid_flexibleWindowMs"


def check_window(value: object) -> int | None:
    """A window as given in a request (milliseconds), or ValidationError. 0 and None: none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(INVALID_WINDOW, "flexibleWindowMs must be an integer (milliseconds)")
    if not 0 <= value <= MAX_WINDOW_MS:
        raise ValidationError(
            INVALID_WINDOW, f"flexibleWindowMs must be between 0 and {MAX_WINDOW_MS:,}"
        )
    return value or None


def instant_in_window(message_id: str, start_ms: int, window_ms: int | None) -> int:
    """The instant in [start_ms, start_ms + window_ms] at which `message_id` is delivered."""
    if not window_ms:
        return start_ms
    digest = hashlib.blake2b(message_id.encode(), digest_size=8, person=b"window").digest()
    return start_ms + int.from_bytes(digest, "big") % (window_ms + 1)
