"""Lateness and dispatch delay: the two figures of how late a delivery was, defined once.

docs/ARCHITECTURE.md, "Lateness", says what each is for. Every figure is an attempt's: a retry
or a redrive is a new attempt with its own due instant.

- lateness = delivered - the attempt's due instant. A first attempt is due at the message's
  sendAt, so a message delivered at its first try reports delivered - sendAt, however far in
  the past that sendAt was when it was accepted. The client-facing figure: `latenessMs`, the
  `scheduler_dispatch_lateness_seconds` histogram.
- dispatch delay = delivered - max(the attempt's due instant, the message's acceptance
  `created_ms`): from the instant the scheduler could first deliver the attempt. A sendAt
  already past at acceptance is not in it, nor a retry's backoff (the retry is due after it),
  nor the time a FAILED message waited for its redrive (a redrive is due when it is issued); a
  late dispatcher is. The SLO figure: `dispatchDelayMs`, `scheduler_dispatch_delay_seconds`.

`created_ms` is read from ingest's clock and the delivery instant from the dispatcher's, so
both figures are clamped at 0.
"""

from __future__ import annotations


def lateness_ms(due_ms: int, delivered_ms: int) -> int:
    return max(0, delivered_ms - due_ms)


def dispatch_delay_ms(due_ms: int, created_ms: int, delivered_ms: int) -> int:
    return max(0, delivered_ms - max(due_ms, created_ms))


def dispatch_delay_of(lateness: int, due_ms: int, created_ms: int) -> int:
    """The dispatch delay from a recorded lateness (delivered = due_ms + lateness)."""
    return dispatch_delay_ms(due_ms, created_ms, due_ms + lateness)
