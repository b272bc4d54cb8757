"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>" with the app's signing secret.

During a secret rotation's grace period the header carries a signature with each secret, so a
receiver that still knows only the previous secret keeps verifying.
"""

from __future__ import annotations

import hashlib
import hmac

from scheduler.store.ports import Application


def sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def signature_header(app: Application, timestamp_ms: int, body: bytes) -> str:
    """Space-separated signatures: the current secret's, then the previous one's while valid."""
    signatures = [sign(app.signing_secret, timestamp_ms, body)]
    valid_until = app.previous_secret_valid_until_ms
    if app.previous_signing_secret and valid_until is not None and timestamp_ms < valid_until:
        signatures.append(sign(app.previous_signing_secret, timestamp_ms, body))
    return " ".join(signatures)


def verify(secret: str, timestamp_ms: int, body: bytes, header: str) -> bool:
    """What a receiver does (used by tests and documented in the README)."""
    expected = sign(secret, timestamp_ms, body)
    return any(hmac.compare_digest(expected, part) for part in header.split())
