"""REST delivery: one signed HTTP POST per attempt (through `http_post`: pooled, redirects
never followed).

Per-application slots bound how many deliveries of one app run at once, so a slow endpoint
queues behind itself instead of delaying other applications. Their number is the app's policy
`maxConcurrent` (else SCHEDULER_DISPATCH_PER_APP_CONCURRENCY), resized when the policy changes;
its `httpTimeoutMs` replaces the client's timeout for its requests.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from scheduler.clock import Clock
from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.records import DueMessage
from scheduler.store.ports import Application

from .http_post import HttpPost, PostFailed, PostTimeout
from .outbound import OutboundGuard, RefusedDestination, UnresolvedDestination
from .signing import signature_header
from .verdict import AttemptKind, AttemptOutcome, classify_status, status_reason

HEADER_MESSAGE_ID = "X-Scheduler-Message-Id"
HEADER_DUE = "X-Scheduler-Due-At"
HEADER_ATTEMPT = "X-Scheduler-Attempt"
HEADER_TIMESTAMP = "X-Scheduler-Timestamp"
HEADER_SIGNATURE = "X-Scheduler-Signature"
MAX_READ_BYTES = 64 * 1024


def request_body(app: Application, message: DueMessage) -> bytes:
    """payload_field: {"payload": <payload>}; unwrap_json: the payload itself, as JSON.

    payload_json was validated as JSON at intake, so it is spliced in without re-encoding.
    """
    if app.send_back_format == "unwrap_json":
        return message.payload_json.encode()
    return b'{"payload":' + message.payload_json.encode() + b"}"


class RestDeliverer:
    def __init__(
        self,
        http: HttpPost,
        guard: OutboundGuard,
        clock: Clock,
        per_app_concurrency: int,
        excerpt_chars: int = 512,
    ) -> None:
        self._http = http
        self._guard = guard
        self._clock = clock
        self._per_app = per_app_concurrency
        self._excerpt = excerpt_chars
        self._slots: dict[str, Slots] = {}

    def _slot(self, app: Application) -> Slots:
        capacity = app.policy.max_concurrent or self._per_app
        slot = self._slots.get(app.app_id)
        if slot is None:
            slot = self._slots[app.app_id] = Slots(capacity)
        elif slot.capacity != capacity:
            slot.resize(capacity)
        return slot

    def headers(self, app: Application, message: DueMessage, body: bytes) -> dict[str, str]:
        timestamp = self._clock.now_ms()
        headers = {
            "Content-Type": "application/json",
            HEADER_MESSAGE_ID: message.message_id,
            HEADER_DUE: format_rfc3339_ms(message.due_ms),
            HEADER_ATTEMPT: str(message.attempt),
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: signature_header(app, timestamp, body),
        }
        if app.auth_header_name and app.auth_header_value is not None:
            headers[app.auth_header_name] = app.auth_header_value
        return headers

    async def deliver(
        self, app: Application, message: DueMessage, stopping: Callable[[], bool] = lambda: False
    ) -> AttemptOutcome | None:
        """One attempt; None if `stopping()` turned true while it waited for its app's slot
        (it was not sent: the ring record stays uncommitted and is read again)."""
        async with self._slot(app):
            if stopping():
                return None
            return await self._attempt(app, message)

    async def _attempt(self, app: Application, message: DueMessage) -> AttemptOutcome:
        try:
            await self._guard.check(app.endpoint)
        except RefusedDestination as exc:
            return AttemptOutcome(AttemptKind.PERMANENT, "refused_address", error=str(exc))
        except UnresolvedDestination as exc:
            return AttemptOutcome(AttemptKind.RETRYABLE, "dns", error=str(exc))
        body = request_body(app, message)
        try:
            # Bounded read: a small success body is read whole so that the connection is
            # reused; of a failure's body only the excerpt is kept.
            timeout_ms = app.policy.http_timeout_ms
            answer = await self._http.post(
                app.endpoint,
                body,
                self.headers(app, message, body),
                MAX_READ_BYTES,
                None if timeout_ms is None else timeout_ms / 1000,
            )
        except PostTimeout as exc:
            return AttemptOutcome(AttemptKind.RETRYABLE, "timeout", error=f"timeout: {exc}")
        except PostFailed as exc:
            return AttemptOutcome(AttemptKind.RETRYABLE, "connection", error=f"connection: {exc}")
        kind = classify_status(answer.status)
        if kind is AttemptKind.SENT:
            return AttemptOutcome(kind, status_reason(answer.status), http_status=answer.status)
        return AttemptOutcome(
            kind,
            status_reason(answer.status),
            http_status=answer.status,
            error=f"http {answer.status}",
            body_excerpt=self._excerpt_of(answer.head),
        )

    def _excerpt_of(self, head: bytes) -> str | None:
        if self._excerpt == 0:
            return None
        # UTF-8 takes at most 4 bytes a character: decode enough bytes, then cut characters
        text = head[: 4 * self._excerpt].decode("utf-8", errors="replace")[: self._excerpt]
        return text or None


class Slots:
    """A semaphore whose capacity can change while it is held (an app's maxConcurrent edited):
    a smaller capacity lets no new holder in until enough have left; a larger one wakes waiters.
    Waiters enter in arrival order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self.held < self.capacity and not self._waiters:
            self.held += 1
            return
        entry: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(entry)
        try:
            await entry
        except asyncio.CancelledError:
            if entry.done() and not entry.cancelled():
                self._release()  # it was let in as it was cancelled: pass the slot on
            else:
                self._waiters.remove(entry)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._wake()

    def _release(self) -> None:
        self.held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held < self.capacity:
            entry = self._waiters.popleft()
            if not entry.done():
                self.held += 1
                entry.set_result(None)
