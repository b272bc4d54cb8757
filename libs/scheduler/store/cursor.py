"""Opaque list cursors: the (created_ms, message_id) of the last message of a page, the id of
the last schedule of a page (prefixed, so neither kind of cursor passes for the other)."""

from __future__ import annotations

import base64


def encode_cursor(created_ms: int, message_id: str) -> str:
    return _encode(f"{created_ms}:{message_id}")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Raises ValueError for a cursor that this system did not make."""
    try:
        created, message_id = _decode(cursor).split(":", 1)
        return int(created), message_id
    except ValueError as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


_SCHEDULE = "s:"


def encode_schedule_cursor(schedule_id: str) -> str:
    return _encode(f"{_SCHEDULE}{schedule_id}")


def decode_schedule_cursor(cursor: str) -> str:
    """Raises ValueError for a cursor that this system did not make."""
    raw = _decode(cursor)
    if not raw.startswith(_SCHEDULE) or len(raw) == len(_SCHEDULE):
        raise ValueError(f"invalid cursor {cursor!r}")
    return raw[len(_SCHEDULE) :]


def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"invalid cursor {cursor!r}") from exc
