"""Pure decisions of the dispatcher: fire or skip at the due instant, and what an attempt means.

No I/O here: the caller reads the record, the app and the abort view, and applies the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from scheduler.domain import lateness
from scheduler.domain.backoff import Backoff
from scheduler.domain.policy import DeliveryPolicy
from scheduler.domain.status import ABORTABLE, Status
from scheduler.records import DeadLetter, DeliveryOutcome, DeliveryResult, DueMessage
from scheduler.store.ports import Application, StatusUpdate


class Verdict(Enum):
    FIRE = "fire"
    ABORTED = "aborted"  # an abort command or an ABORTED record
    APP_DELETED = "app_deleted"  # tombstone: the message is aborted (lazy purge)
    APP_MISSING = "app_missing"  # no such app: nothing to deliver to
    DONE = "done"  # the record is already terminal for this generation
    STALE = "stale"  # a newer generation or attempt exists: this copy is obsolete


# Values of DeliveryResult.error for SKIPPED results (the record writer acts on APP_DELETED).
SKIP_REASONS = {v: v.value for v in Verdict if v is not Verdict.FIRE}


def fire_check(
    message: DueMessage, state: StatusUpdate | None, app: Application | None, aborted: bool
) -> Verdict:
    """May this attempt be delivered now?

    A missing record does not block: an abort needs the record (it is a conditional write from
    READY/QUEUED), so no abort can have won; the record may simply not be written yet.
    """
    if aborted:
        return Verdict.ABORTED
    if app is None:
        return Verdict.APP_MISSING
    if app.deleted_ms is not None:
        return Verdict.APP_DELETED
    if state is None:
        return Verdict.FIRE
    if state.generation > message.generation:
        return Verdict.STALE
    if state.generation < message.generation:
        return Verdict.FIRE  # a redrive whose record write we do not see yet
    if state.status is Status.ABORTED:
        return Verdict.ABORTED
    if state.status not in ABORTABLE:
        return Verdict.DONE
    if state.attempt > message.attempt:
        return Verdict.STALE
    return Verdict.FIRE


class AttemptKind(Enum):
    SENT = "sent"
    RETRYABLE = "retryable"  # 5xx, 408, 429, timeout, connection error
    PERMANENT = "permanent"  # other 4xx, 3xx (redirects are never followed), refused address


@dataclass(frozen=True)
class AttemptOutcome:
    kind: AttemptKind
    reason: str  # metric label: "2xx", "5xx", "timeout", "redirect", ...
    http_status: int | None = None
    error: str | None = None
    body_excerpt: str | None = None


def classify_status(status: int) -> AttemptKind:
    if 200 <= status < 300:
        return AttemptKind.SENT
    if status >= 500 or status in (408, 429):
        return AttemptKind.RETRYABLE
    return AttemptKind.PERMANENT


def status_reason(status: int) -> str:
    if status in (408, 429):
        return str(status)
    if 300 <= status < 400:
        return "redirect"
    return f"{status // 100}xx"


@dataclass(frozen=True)
class Settlement:
    """What one attempt leaves behind: a result, maybe a retry, maybe a dead letter."""

    result: DeliveryResult
    retry: DueMessage | None = None
    dead_letter: DeadLetter | None = None


def jitter_draw(message_id: str, attempt: int) -> float:
    """A deterministic draw in [0, 1): a replayed attempt reschedules to the same instant."""
    digest = hashlib.blake2b(f"{message_id}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


def lateness_ms(message: DueMessage, delivered_ms: int) -> int:
    """delivered - the attempt's due instant (scheduler.domain.lateness)."""
    return lateness.lateness_ms(message.due_ms, delivered_ms)


def dispatch_delay_ms(message: DueMessage, delivered_ms: int) -> int:
    """delivered - max(the attempt's due instant, created_ms) (scheduler.domain.lateness)."""
    return lateness.dispatch_delay_ms(message.due_ms, message.created_ms, delivered_ms)


def age_start_ms(message: DueMessage) -> int:
    """Where a message's age (an app's maxEventAgeMs) counts from: the instant it was first
    due in this generation (its sendAt, or its creation when it was scheduled in the past)."""
    return max(message.send_at_ms, message.created_ms)


def expired(
    message: DueMessage, policy: DeliveryPolicy, now_ms: int, uncounted_ms: int = 0
) -> AttemptOutcome | None:
    """Why the attempt is not made (FAILED at once) if the message is older than its app's
    maxEventAgeMs; `uncounted_ms`: time held that does not count (admission.py)."""
    limit = policy.max_event_age_ms
    if limit is None:
        return None
    age = now_ms - uncounted_ms - age_start_ms(message)
    if age <= limit:
        return None
    return AttemptOutcome(
        AttemptKind.PERMANENT,
        "max_event_age",
        error=f"not attempted: {age} ms old, over the app's maxEventAgeMs ({limit} ms)",
    )


def settle(
    message: DueMessage,
    outcome: AttemptOutcome,
    now_ms: int,
    backoff: Backoff,
    give_up_at_ms: int | None = None,
) -> Settlement:
    """`give_up_at_ms`: no retry is scheduled after this instant (an app's maxEventAgeMs)."""
    late = lateness_ms(message, now_ms)
    error = outcome.error
    if outcome.body_excerpt:
        error = f"{error or outcome.reason}: {outcome.body_excerpt}"

    def result(kind: DeliveryOutcome) -> DeliveryResult:
        return DeliveryResult(
            message_id=message.message_id,
            app_id=message.app_id,
            generation=message.generation,
            attempt=message.attempt,
            outcome=kind,
            due_ms=message.due_ms,
            finished_ms=now_ms,
            lateness_ms=late,
            http_status=outcome.http_status,
            error=error,
        )

    if outcome.kind is AttemptKind.SENT:
        return Settlement(result(DeliveryOutcome.SENT))
    next_due = None
    gave_up = ""
    if outcome.kind is AttemptKind.RETRYABLE:
        draw = jitter_draw(message.message_id, message.attempt)
        next_due = backoff.next_due_ms(message.attempt, now_ms, draw)
        if next_due is not None and give_up_at_ms is not None and next_due > give_up_at_ms:
            next_due = None
            gave_up = "; no attempt left within the app's maxEventAgeMs"
            error = f"{error or outcome.reason}{gave_up}"
    if next_due is not None:
        retry = DueMessage(
            message_id=message.message_id,
            app_id=message.app_id,
            generation=message.generation,
            attempt=message.attempt + 1,
            due_ms=next_due,
            send_at_ms=message.send_at_ms,
            created_ms=message.created_ms,
            payload_json=message.payload_json,
            kafka_key=message.kafka_key,
        )
        return Settlement(result(DeliveryOutcome.RETRY), retry=retry)
    dead = DeadLetter(
        message_id=message.message_id,
        app_id=message.app_id,
        generation=message.generation,
        attempts=message.attempt,
        due_ms=message.due_ms,
        failed_ms=now_ms,
        payload_json=message.payload_json,
        last_error=(outcome.error or outcome.reason) + gave_up,
        last_http_status=outcome.http_status,
        body_excerpt=outcome.body_excerpt,
    )
    return Settlement(result(DeliveryOutcome.FAILED), dead_letter=dead)


def skipped(message: DueMessage, verdict: Verdict, now_ms: int) -> DeliveryResult:
    return DeliveryResult(
        message_id=message.message_id,
        app_id=message.app_id,
        generation=message.generation,
        attempt=message.attempt,
        outcome=DeliveryOutcome.SKIPPED,
        due_ms=message.due_ms,
        finished_ms=now_ms,
        lateness_ms=lateness_ms(message, now_ms),
        error=verdict.value,
    )
