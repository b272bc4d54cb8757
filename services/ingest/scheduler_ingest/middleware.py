"""One pure-ASGI middleware in front of every route: body size limit, content type, metrics.

- A body larger than `max_body_bytes` is refused with 413 before any route sees it (by
  Content-Length at once, or while reading a chunked body).
- A non-empty body must be `application/json` (415 otherwise).
- Every response is counted by route template, method and status, and timed.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.clock import Clock
from scheduler_ingest.metrics import IngestMetrics


def _error_body(token: str, message: str) -> bytes:
    return json.dumps({"error": token, "message": message}).encode()


async def _send_error(send: Send, status: int, token: str, message: str) -> None:
    body = _error_body(token, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GatewayMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, metrics: IngestMetrics, clock: Clock
    ) -> None:
        self._app = app
        self._max = max_body_bytes
        self._metrics = metrics
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = self._clock.monotonic_ms()
        status_seen: list[int] = []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
                route = getattr(scope.get("route"), "path", "unmatched")
                self._metrics.requests.labels(route, scope["method"], str(message["status"])).inc()
                self._metrics.request_seconds.labels(route).observe(
                    (self._clock.monotonic_ms() - started) / 1000.0
                )
            await send(message)

        refusal = self._refuse(scope)
        if refusal is not None:
            status, token, message = refusal
            self._metrics.rejects.labels(token).inc()
            await _send_error(send_counted, status, token, message)
            return
        body = await self._read_body(receive)
        if body is None:
            self._metrics.rejects.labels("body_too_large").inc()
            await _send_error(
                send_counted, 413, "body_too_large", f"the body exceeds {self._max} bytes"
            )
            return
        if body and not _is_json(scope):
            self._metrics.rejects.labels("unsupported_media_type").inc()
            await _send_error(
                send_counted, 415, "unsupported_media_type", "send the body as application/json"
            )
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, once the client goes away

        await self._app(scope, replay, send_counted)

    def _refuse(self, scope: Scope) -> tuple[int, str, str] | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return 400, "invalid_request", "invalid Content-Length"
                if length > self._max:
                    return 413, "body_too_large", f"the body exceeds {self._max} bytes"
        return None

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it exceeds the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False
