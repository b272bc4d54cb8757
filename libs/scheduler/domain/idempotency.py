"""Idempotency keys (decision 8): one key, one message, one body, whichever path sends it.

The message id of a keyed request is `derived_message_id(app, key)`, so every replica and every
Kafka-native producer computes the same id. That alone does not stop two *different* requests
under one key from racing: the key is also *claimed* with a conditional insert (a lightweight
transaction) that exactly one caller wins (`MessageStore.claim_keys`). The claim binds the key to
a message id, the fingerprint of the request body and the winner's `created_ms`.

"The same request" is the same message id, the same payload (equal as JSON values: key order and
whitespace do not matter), the same `send_at_ms` and the same `kafka_key`. `created_ms`,
`source` and `trace_id` are not part of it: a retry has a new `created_ms` and is the same
request.

A claim lives `claim_ttl_ms(requests_retention_ms)`: longer than a request can wait in Kafka
before the bucketer writes its record. After that the message record, which is never deleted,
is the key's memory: `claim_keys` answers from the record when one exists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum

from scheduler.domain.status import Status
from scheduler.records import ScheduleRequest

DAY_MS = 86_400_000
IDEMPOTENCY_CONFLICT = "idempotency_conflict"


def fingerprint(payload_json: str, send_at_ms: int, kafka_key: str | None) -> str:
    """SHA-256 (hex) of what defines "the same request" besides the message id."""
    payload = json.dumps(
        json.loads(payload_json), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    body = json.dumps([payload, send_at_ms, kafka_key], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def claim_ttl_ms(requests_retention_ms: int) -> int:
    """How long a claim is kept: the retention of the requests topic (the longest a request can
    wait before the bucketer writes its record) plus a day. After that the record answers."""
    return requests_retention_ms + DAY_MS


@dataclass(frozen=True, slots=True)
class KeyClaim:
    app_id: str
    idempotency_key: str
    message_id: str
    fingerprint: str
    created_ms: int  # the claimer's request: a copy with another created_ms is a duplicate

    def same_request(self, other: KeyClaim) -> bool:
        return self.message_id == other.message_id and self.fingerprint == other.fingerprint


def claim_of(request: ScheduleRequest) -> KeyClaim | None:
    """The claim a keyed request makes (None without an idempotency key)."""
    if request.idempotency_key is None:
        return None
    return KeyClaim(
        app_id=request.app_id,
        idempotency_key=request.idempotency_key,
        message_id=request.message_id,
        fingerprint=fingerprint(request.payload_json, request.send_at_ms, request.kafka_key),
        created_ms=request.created_ms,
    )


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """Who holds a key, as `claim_keys` found it."""

    claim: KeyClaim  # the winning claim (ours when `won`), or one rebuilt from the record
    won: bool  # this very call inserted the claim
    status: Status | None = None  # the message record's status, if the record exists


class Verdict(Enum):
    MINE = "mine"  # won now, or the holder is this very request (a replay): go ahead
    DUPLICATE = "duplicate"  # the same request, sent again: answer with the holder's message
    CONFLICT = "conflict"  # another request under the key: refuse


def verdict(claim: KeyClaim, holder: KeyHolder) -> Verdict:
    if not claim.same_request(holder.claim):
        return Verdict.CONFLICT
    if holder.won or holder.claim.created_ms == claim.created_ms:
        return Verdict.MINE
    return Verdict.DUPLICATE
