"""Message ids: ULIDs (time-sortable), or derived from an idempotency key (decision 8)."""

from __future__ import annotations

import hashlib
import re
import secrets

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def _encode128(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_message_id(now_ms: int, random_bits: int | None = None) -> str:
    """A ULID: 48-bit millisecond timestamp then 80 random bits, 26 Crockford base32 chars."""
    if not 0 <= now_ms < 1 << 48:
        raise ValueError("timestamp out of ULID range")
    rand = secrets.randbits(80) if random_bits is None else random_bits & ((1 << 80) - 1)
    return _encode128(now_ms << 80 | rand)


def derived_message_id(app_id: str, idempotency_key: str) -> str:
    """The same (app, idempotencyKey) always gives the same id, on any replica.

    ULID-shaped so it passes the same validation, but not time-sortable (lists sort by creation).
    """
    digest = hashlib.sha256(f"{app_id}\x00{idempotency_key}".encode()).digest()
    return _encode128(int.from_bytes(digest[:16], "big") >> 2)


def is_message_id(value: str) -> bool:
    return _ULID.fullmatch(value) is not None
