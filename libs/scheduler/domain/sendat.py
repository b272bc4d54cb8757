"""Parsing and normalising `sendAt`: RFC 3339 with an offset, or epoch milliseconds."""

from __future__ import annotations

import re
from calendar import timegm
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from scheduler.domain.errors import ValidationError

INVALID: Final = "invalid_sendAt"
MISSING: Final = "missing_sendAt"

# Numbers below this are probably seconds (10^11 ms is 1973-03-03), so they are refused.
MIN_EPOCH_MS: Final = 10**11
# 9999-12-31T23:59:59.999Z: the last instant RFC 3339 can write.
MAX_EPOCH_MS: Final = 253_402_300_799_999

_RFC3339 = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ]"
    r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# A string of digits (e.g. "1767225600000"): epoch milliseconds sent in quotes.
_NUMERIC = re.compile(r"[+-]?\d+(?:\.\d*)?")


def parse_rfc3339_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 timestamp with an explicit offset.

    A fraction finer than a millisecond is rounded *up*, so that nothing is ever delivered
    before the instant the client wrote.
    """
    match = _RFC3339.fullmatch(text.strip())
    if match is None and _NUMERIC.fullmatch(text.strip()):
        raise ValidationError(
            INVALID,
            f"sendAt {text!r} is a string of digits: epoch milliseconds must be a JSON number"
            f' ("sendAt": {text.strip()}, without quotes), or send an RFC 3339 string'
            " such as 2030-01-01T12:00:00Z",
        )
    if match is None:
        raise ValidationError(
            INVALID,
            f"sendAt {text!r} is not an RFC 3339 timestamp with an offset "
            "(e.g. 2030-01-01T12:00:00Z or 2030-01-01T17:30:00+05:30)",
        )
    year, month, day = int(match["y"]), int(match["mo"]), int(match["d"])
    hour, minute, second = int(match["h"]), int(match["mi"]), int(match["s"])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    max_day = 0
    if 1 <= month <= 12:
        max_day = 28 if month == 2 and not leap else _DAYS_IN_MONTH[month - 1]
    if not (1 <= day <= max_day and hour < 24 and minute < 60 and second < 60):
        raise ValidationError(INVALID, f"sendAt {text!r} is not a valid calendar date and time")
    offset_ms = 0
    tz = match["tz"]
    if tz not in ("Z", "z"):
        off_h, off_m = int(tz[1:3]), int(tz[4:6])
        if off_h > 23 or off_m > 59:
            raise ValidationError(INVALID, f"sendAt {text!r} has an invalid UTC offset {tz}")
        offset_ms = (off_h * 60 + off_m) * 60_000 * (1 if tz[0] == "+" else -1)
    frac = match["frac"] or ""
    frac_ns = int(frac.ljust(9, "0")) if frac else 0
    frac_ms = -(-frac_ns // 1_000_000)  # ceiling: never earlier than written
    seconds = timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds * 1000 + frac_ms - offset_ms


def parse_send_at(value: object) -> int:
    """The instant a client asked for, as epoch ms UTC. Raises `ValidationError` if unusable.

    Accepts an RFC 3339 string with an offset (`Z`, `+05:30`, ...) or an integer number of epoch
    milliseconds. Refuses timestamps without an offset (ambiguous), numbers that look like seconds,
    fractional numbers, booleans and anything outside 1973..9999.
    """
    if value is None:
        raise ValidationError(MISSING, "sendAt is required")
    if isinstance(value, bool):
        raise ValidationError(INVALID, "sendAt must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValidationError(INVALID, "sendAt in epoch milliseconds must be a whole number")
        value = int(value)
    if isinstance(value, int):
        if value < MIN_EPOCH_MS:
            raise ValidationError(
                INVALID,
                f"sendAt {value} is too small for epoch milliseconds (seconds were probably meant;"
                " multiply by 1000)",
            )
        instant = value
    elif isinstance(value, str):
        if not value.strip():
            raise ValidationError(MISSING, "sendAt is empty")
        instant = parse_rfc3339_ms(value)
    else:
        raise ValidationError(INVALID, "sendAt must be an RFC 3339 string or epoch milliseconds")
    if not MIN_EPOCH_MS <= instant <= MAX_EPOCH_MS:
        raise ValidationError(INVALID, f"sendAt {value!r} is outside the supported range")
    return instant


def parse_instant(
    value: Any, token: str, name: str, parse: Callable[[Any], int] = parse_send_at
) -> int | None:
    """A schedule's `start` or `end`: what `parse` takes for a sendAt (by default an RFC 3339
    string with an offset or epoch ms), None for None, refused under `token` and `name`."""
    if value is None:
        return None
    try:
        return parse(value)
    except ValidationError as exc:
        message = exc.message.replace("sendAt", name).replace("send_at", name)
        raise ValidationError(token, message) from None


def check_horizon(send_at_ms: int, now_ms: int, past_window_ms: int, max_future_ms: int) -> None:
    """Refuse instants too far in the past (older than the window) or too far in the future."""
    if send_at_ms < now_ms - past_window_ms:
        raise ValidationError(
            INVALID,
            f"sendAt is more than {past_window_ms // 1000} s in the past; "
            "a past sendAt within that window means 'deliver now'",
        )
    if send_at_ms > now_ms + max_future_ms:
        raise ValidationError(
            INVALID, f"sendAt is more than {max_future_ms // 86_400_000} days in the future"
        )


def format_rfc3339_ms(epoch_ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds, e.g. `2030-01-01T12:00:00.000Z`."""
    return f"{_format_second(epoch_ms // 1000)}.{epoch_ms % 1000:03d}Z"


@lru_cache(maxsize=4096)
def _format_second(epoch_s: int) -> str:
    # Cached: deliveries come due in bursts within the same seconds (a header per delivery).
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
