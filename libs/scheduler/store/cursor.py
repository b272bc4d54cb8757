"""Opaque list cursors: the (created_ms, message_id) of the last item of a page."""

from __future__ import annotations

import base64


def encode_cursor(created_ms: int, message_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_ms}:{message_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Raises ValueError for a cursor that this system did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, message_id = raw.split(":", 1)
        return int(created), message_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
