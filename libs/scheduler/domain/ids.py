"""Message ids: ULIDs (time-sortable), or derived from an idempotency key (decision 8) or from
an occurrence of a recurring schedule."""

from __future__ import annotations

import hashlib
import re
import secrets

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10 bits as 2 characters
_SHIFTS = tuple(range(120, -1, -10))


def _encode128(value: int) -> str:
    """26 Crockford base32 characters, 5 bits each from the top (value < 2**130); two at a time
    (a loop of 26 cost twice as much, on every message the gateway schedules)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


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


def occurrence_message_id(app_id: str, schedule_id: str, occurrence_ms: int) -> str:
    """The message of one occurrence of a recurring schedule: the same (app, schedule, instant)
    always gives the same id, on any replica, so creating an occurrence twice yields one message.

    A ULID whose 48-bit timestamp is the occurrence instant (so one schedule's messages sort by
    occurrence, and two of its occurrences never share an id) and whose 80 other bits hash the
    application and the schedule: two schedules share ids only if those 80 bits collide, the
    same odds as two random ULIDs of one millisecond. The hash is BLAKE2b personalised for this
    use, so no idempotency key can be chosen to produce an occurrence's id.
    """
    if not 0 <= occurrence_ms < 1 << 48:
        raise ValueError("occurrence instant out of ULID range")
    app = app_id.encode()
    # length-prefixed, so ("ab", "c") and ("a", "bc") stay apart whatever the ids contain
    name = len(app).to_bytes(4, "big") + app + schedule_id.encode()
    digest = hashlib.blake2b(name, digest_size=10, person=b"pit-occurrence").digest()
    return _encode128(occurrence_ms << 80 | int.from_bytes(digest, "big"))


def is_message_id(value: str) -> bool:
    return _ULID.fullmatch(value) is not None
