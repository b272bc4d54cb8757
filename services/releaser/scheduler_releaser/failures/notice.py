"""What a failure notice is: its JSON body and its headers (HTTP and Kafka). Pure functions.

The body names the message that ended FAILED (a `DeadLetter`); the payload is always spliced in
as `"payload": <payload>` (an app's `sendBackFormat` concerns deliveries, not notices). HTTP
notices carry the headers and signature of a delivery (dispatcher/rest.py, signing.py) plus
`X-Scheduler-Event: message.failed`, so one URL can serve deliveries and notices.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.records import DeadLetter
from scheduler.store.ports import Application
from scheduler_releaser.dispatcher.rest import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    HEADER_MESSAGE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
)
from scheduler_releaser.dispatcher.signing import signature_header

HEADER_EVENT = "X-Scheduler-Event"
EVENT_FAILED = "message.failed"


def notice_body(letter: DeadLetter) -> bytes:
    """The notice's JSON. `payload_json` was validated as JSON at intake: spliced in as is."""
    fields = {
        "messageId": letter.message_id,
        "appId": letter.app_id,
        "generation": letter.generation,
        "attempts": letter.attempts,
        "dueAt": format_rfc3339_ms(letter.due_ms),
        "failedAt": format_rfc3339_ms(letter.failed_ms),
        "lastError": letter.last_error,
        "lastHttpStatus": letter.last_http_status,
        "bodyExcerpt": letter.body_excerpt,
    }
    head = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return f'{head[:-1]},"payload":{letter.payload_json}}}'.encode()


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port (the credentials of one may be sent to the other)."""
    try:
        return _origin(a) == _origin(b)
    except ValueError:  # a port that is not a number: no origin to share
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or _DEFAULT_PORTS.get(scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def http_headers(
    app: Application, letter: DeadLetter, body: bytes, attempt: int, timestamp_ms: int
) -> dict[str, str]:
    """The headers of a delivery (rest.py), signed the same way, plus the event. The app's
    `httpAuthorization` header goes only to a failure URL of the endpoint's own origin: an
    endpoint's credential is never sent to another host."""
    headers = {
        "Content-Type": "application/json",
        HEADER_EVENT: EVENT_FAILED,
        HEADER_MESSAGE_ID: letter.message_id,
        HEADER_DUE: format_rfc3339_ms(letter.due_ms),
        HEADER_ATTEMPT: str(attempt),
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_SIGNATURE: signature_header(app, timestamp_ms, body),
    }
    if (
        app.auth_header_name
        and app.auth_header_value is not None
        and app.type == "REST"
        and app.failure_endpoint is not None
        and same_origin(app.endpoint, app.failure_endpoint)
    ):
        headers[app.auth_header_name] = app.auth_header_value
    return headers


def kafka_headers(letter: DeadLetter) -> list[tuple[str, str | bytes | None]]:
    return [
        (HEADER_EVENT, EVENT_FAILED.encode()),
        (HEADER_MESSAGE_ID, letter.message_id.encode()),
        (HEADER_DUE, format_rfc3339_ms(letter.due_ms).encode()),
    ]
