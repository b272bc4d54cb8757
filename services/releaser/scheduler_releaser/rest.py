"""REST delivery: one signed HTTP POST per attempt, pooled, redirects never followed.

Per-application semaphores bound how many deliveries of one app run at once, so a slow
endpoint queues behind itself instead of delaying other applications.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from scheduler.clock import Clock
from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.records import DueMessage
from scheduler.store.ports import Application

from .outbound import OutboundGuard, RefusedDestination, UnresolvedDestination
from .signing import signature_header
from .verdict import AttemptKind, AttemptOutcome, classify_status, status_reason

HEADER_MESSAGE_ID = "X-Scheduler-Message-Id"
HEADER_DUE = "X-Scheduler-Due-At"
HEADER_ATTEMPT = "X-Scheduler-Attempt"
HEADER_TIMESTAMP = "X-Scheduler-Timestamp"
HEADER_SIGNATURE = "X-Scheduler-Signature"
MAX_DRAIN_BYTES = 64 * 1024


def request_body(app: Application, message: DueMessage) -> bytes:
    """payload_field: {"payload": <payload>}; unwrap_json: the payload itself, as JSON.

    payload_json was validated as JSON at intake, so it is spliced in without re-encoding.
    """
    if app.send_back_format == "unwrap_json":
        return message.payload_json.encode()
    return b'{"payload":' + message.payload_json.encode() + b"}"


def build_client(max_connections: int, timeout_s: float) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        follow_redirects=False, timeout=httpx.Timeout(timeout_s), limits=limits, trust_env=False
    )


class RestDeliverer:
    def __init__(
        self,
        client: httpx.AsyncClient,
        guard: OutboundGuard,
        clock: Clock,
        per_app_concurrency: int,
        excerpt_chars: int = 512,
    ) -> None:
        self._client = client
        self._guard = guard
        self._clock = clock
        self._per_app = per_app_concurrency
        self._excerpt = excerpt_chars
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _slot(self, app_id: str) -> asyncio.Semaphore:
        slot = self._slots.get(app_id)
        if slot is None:
            slot = self._slots[app_id] = asyncio.Semaphore(self._per_app)
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
        async with self._slot(app.app_id):
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
            async with self._client.stream(
                "POST", app.endpoint, content=body, headers=self.headers(app, message, body)
            ) as response:
                kind = classify_status(response.status_code)
                if kind is AttemptKind.SENT:
                    await self._drain(response)
                    excerpt = None
                else:
                    excerpt = await self._read_excerpt(response)
                error = None if kind is AttemptKind.SENT else f"http {response.status_code}"
                return AttemptOutcome(
                    kind,
                    status_reason(response.status_code),
                    http_status=response.status_code,
                    error=error,
                    body_excerpt=excerpt,
                )
        except httpx.TimeoutException as exc:
            return AttemptOutcome(AttemptKind.RETRYABLE, "timeout", error=f"timeout: {exc!r}")
        except httpx.TransportError as exc:
            return AttemptOutcome(AttemptKind.RETRYABLE, "connection", error=f"connection: {exc!r}")

    async def _drain(self, response: httpx.Response) -> None:
        """Read a (small) success body so the connection goes back to the pool; a body larger
        than the limit is abandoned, which closes that connection instead."""
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_DRAIN_BYTES:
                    return
        except httpx.HTTPError:
            pass  # delivered already (2xx); the connection is simply not reused

    async def _read_excerpt(self, response: httpx.Response) -> str | None:
        if self._excerpt == 0:
            return None
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= self._excerpt:
                    break
        except httpx.HTTPError:
            pass  # the excerpt is best effort; the status decides the outcome
        text = b"".join(chunks)[: self._excerpt].decode("utf-8", errors="replace")
        return text or None
