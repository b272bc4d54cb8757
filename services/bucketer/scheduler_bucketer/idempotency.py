"""Idempotency keys for requests read from the requests topic (decision 8).

Kafka-native producers publish straight to the requests topic, so the bucketer claims their keys
the way ingest does (`MessageStore.claim_keys`: the record when the message is recorded, else a
conditional insert that exactly one claimer wins, here or in any ingest replica). Per request:

- another request holds the key (another message id or body): rejected, reason
  `idempotency_conflict`;
- the request is the holder itself (won now, or the same `created_ms`: a replay, or ingest's own
  request, which claimed in ingest before it was published): processed as before;
- a copy of the holder's request with another `created_ms` (a producer that sent the same
  request again, an ingest replica that lost the race with the same body): skipped when the
  message is recorded (its holder's request is in Kafka or already processed: record writes
  happen only after the request is durable in Kafka), otherwise processed with the holder's
  `created_ms`, so it writes exactly what the holder's request writes (the holder may have died
  before publishing; if it did publish, the two copies write the same cells).

Requests without a key are not touched. One claim call per chunk of the batch (the adapter sends
the reads and conditional inserts concurrently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from scheduler.domain.idempotency import IDEMPOTENCY_CONFLICT, Verdict, claim_of, verdict
from scheduler.store.ports import MessageStore

from .intake import Accepted, Rejection
from .metrics import BucketerMetrics


class KeyGate:
    def __init__(self, messages: MessageStore, ttl_ms: int, metrics: BucketerMetrics) -> None:
        self._messages = messages
        self._ttl_ms = ttl_ms
        self._metrics = metrics

    def settle(self, admitted: Sequence[Accepted]) -> list[Accepted | Rejection | None]:
        """Per request, in order: what to process (maybe with the holder's created_ms), the
        rejection to publish, or None (a copy of a recorded message: nothing to do)."""
        out: list[Accepted | Rejection | None] = list(admitted)
        keyed = [(i, a, c) for i, a in enumerate(admitted) if (c := claim_of(a.request))]
        if not keyed:
            return out
        holders = self._messages.claim_keys([c for _, _, c in keyed], self._ttl_ms)
        for (i, accepted, claim), holder in zip(keyed, holders, strict=True):
            outcome = verdict(claim, holder)
            if outcome is Verdict.CONFLICT:
                out[i] = Rejection(
                    accepted.record,
                    IDEMPOTENCY_CONFLICT,
                    f"idempotency_key {claim.idempotency_key!r} of application"
                    f" {claim.app_id!r} is held by another request (message"
                    f" {holder.claim.message_id}, another payload, send_at_ms or kafka_key)",
                    claim.app_id,
                    claim.message_id,
                )
            elif outcome is Verdict.DUPLICATE:
                self._metrics.key_duplicates.labels(
                    "skipped" if holder.status is not None else "processed"
                ).inc()
                if holder.status is not None:
                    out[i] = None
                else:
                    request = dataclasses.replace(
                        accepted.request, created_ms=holder.claim.created_ms
                    )
                    out[i] = dataclasses.replace(accepted, request=request)
        return out
