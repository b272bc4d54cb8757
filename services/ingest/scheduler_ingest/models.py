"""Control-plane request bodies (pydantic, unknown fields refused) and their validation rules."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from scheduler.domain import policy

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # an RFC 9110 token
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=2000)]
Endpoint = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]


class AppType(StrEnum):
    REST = "REST"
    KAFKA = "KAFKA"


class SendBackFormat(StrEnum):
    PAYLOAD_FIELD = "payload_field"
    UNWRAP_JSON = "unwrap_json"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpAuthorization(_Body):
    headerName: Annotated[str, StringConstraints(pattern=HEADER_NAME.pattern)]
    # No control characters: the value goes into an HTTP header as is.
    headerValue: Annotated[
        str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]


class DeliveryPolicyBody(_Body):
    """Overrides of the service's delivery settings for one app; a field left out keeps the
    service's. Bounds: scheduler.domain.policy (docs/API.md "Delivery policy")."""

    maxAttempts: int | None = Field(
        None, ge=1, le=policy.MAX_ATTEMPTS, description="attempts in all, the first included"
    )
    minBackoffMs: int | None = Field(
        None, ge=0, le=policy.MAX_BACKOFF_MS, description="delay after the first failure"
    )
    maxBackoffMs: int | None = Field(
        None, ge=0, le=policy.MAX_BACKOFF_MS, description="longest delay between attempts"
    )
    maxEventAgeMs: int | None = Field(
        None,
        ge=policy.MIN_EVENT_AGE_MS,
        le=policy.MAX_EVENT_AGE_MS,
        description="a message this much past its sendAt goes FAILED without another attempt"
        " (time its app was paused does not count)",
    )
    ratePerSecond: float | None = Field(
        None,
        ge=policy.MIN_RATE,
        le=policy.MAX_RATE,
        description="deliveries per second at most; due messages over it wait (never dropped)",
    )
    rateBurst: int | None = Field(
        None, ge=1, le=policy.MAX_BURST, description="deliveries at once after an idle spell"
    )
    rateHoldCountsTowardAge: bool = Field(
        False, description="whether time waiting for the rate limit counts toward maxEventAgeMs"
    )
    maxConcurrent: int | None = Field(
        None, ge=1, le=policy.MAX_CONCURRENCY, description="REST requests in flight at once"
    )
    httpTimeoutMs: int | None = Field(
        None,
        ge=policy.MIN_HTTP_TIMEOUT_MS,
        le=policy.MAX_HTTP_TIMEOUT_MS,
        description="a REST request unanswered this long is a failed (retried) attempt",
    )


class FailureDestinationBody(_Body):
    """Where each of the app's messages that ends FAILED is also sent (docs/WEBHOOKS.md)."""

    type: AppType
    endpoint: Endpoint


class ApplicationCreate(_Body):
    name: Name
    type: AppType
    endpoint: Endpoint
    description: Description | None = None
    httpAuthorization: HttpAuthorization | None = None
    sendBackFormat: SendBackFormat = SendBackFormat.PAYLOAD_FIELD
    deliveryPolicy: DeliveryPolicyBody | None = None
    failureDestination: FailureDestinationBody | None = None


class ApplicationUpdate(_Body):
    """Partial update: only the fields given change; `httpAuthorization: null` removes it, as
    `deliveryPolicy: null` and `failureDestination: null` do. A `deliveryPolicy` given replaces
    the previous one whole."""

    name: Name | None = None
    endpoint: Endpoint | None = None
    description: Description | None = None
    httpAuthorization: HttpAuthorization | None = None
    sendBackFormat: SendBackFormat | None = None
    deliveryPolicy: DeliveryPolicyBody | None = None
    failureDestination: FailureDestinationBody | None = None


class EndpointError(ValueError):
    pass


def check_rest_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError("a REST endpoint must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise EndpointError("put credentials in httpAuthorization, not in the URL")


def check_kafka_endpoint(topic: str, system_prefix: str, allowed_prefixes: list[str]) -> None:
    if not TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise EndpointError("a KAFKA endpoint must be a valid topic name")
    if topic.startswith(system_prefix) or topic.startswith("__"):
        raise EndpointError("a KAFKA endpoint must not name one of the system's own topics")
    if not any(topic.startswith(prefix) for prefix in allowed_prefixes if prefix):
        raise EndpointError(
            "this topic is outside the prefixes the operator allows for KAFKA applications"
            f" ({', '.join(allowed_prefixes) or 'none configured'})"
        )


class AppView(BaseModel):
    id: str
    name: str
    type: AppType
    endpoint: str
    description: str | None
    httpAuthorization: dict[str, str] | None = Field(
        description="only headerName: the header value is never returned"
    )
    sendBackFormat: SendBackFormat
    deliveryPolicy: dict[str, object] = Field(
        default_factory=dict, description="the overrides set (empty: the service's settings)"
    )
    deliveriesPaused: bool = Field(
        False, description="true while the app's deliveries are paused (due messages wait)"
    )
    failureDestination: dict[str, str] | None = None
    created: str
    updated: str


WEBHOOK_VERIFY_HELP = (
    "webhook signing secret, shown once. Verify each delivery's X-Scheduler-Signature with"
    " HMAC-SHA256 keyed by this whole string, `whsec_` prefix included, as UTF-8 bytes (not"
    " base64-decoded), over `<X-Scheduler-Timestamp>.<raw body>`: see docs/WEBHOOKS.md"
)


class AppSaved(AppView):
    """The answer of a creation or an update."""

    warnings: list[str] = Field(
        default_factory=list,
        description="what was saved despite a failed check (a missing Kafka topic, when the"
        " operator allows it: SCHEDULER_INGEST_ALLOW_MISSING_KAFKA_TOPICS)",
    )


class AppCreated(AppSaved):
    signingSecret: str = Field(description=WEBHOOK_VERIFY_HELP)


class KeyCreated(BaseModel):
    id: str
    secret: str = Field(description="shown once; store it now")


class KeyView(BaseModel):
    id: str
    created: str
    active: bool


# -- response documents (OpenAPI) -------------------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable token, e.g. missing_payload")
    message: str


class Scheduled(BaseModel):
    scheduledMessageId: str
    messageId: str
    sendAt: str = Field(description="normalised to UTC, RFC 3339 with milliseconds")
    status: str
    duplicate: bool = Field(
        description="true when the idempotencyKey was claimed before by the same request: the"
        " answer is that request's message"
    )


class BatchItem(BaseModel):
    """Either the fields of a scheduled message or `error` + `message`."""

    scheduledMessageId: str | None = None
    messageId: str | None = None
    sendAt: str | None = None
    status: str | None = None
    duplicate: bool | None = None
    error: str | None = None
    message: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]
    accepted: int
    rejected: int


class MessageOut(BaseModel):
    appId: str
    messageId: str
    payload: object
    sendAt: str
    status: str
    created: str
    updated: str
    dueAt: str
    generation: int
    attempt: int
    latenessMs: int | None = Field(
        description="once SENT: delivered - the delivered attempt's due instant (sendAt for a"
        " first attempt, however far in the past)"
    )
    dispatchDelayMs: int | None = Field(
        description="once SENT: delivered - max(the attempt's due instant, created): the"
        " scheduler's own delay, without a sendAt that was already past when it was accepted"
    )
    lastHttpStatus: int | None
    lastError: str | None
    idempotencyKey: str | None
    source: str


class MessageList(BaseModel):
    messages: list[MessageOut]
    next: str | None = Field(description="pass as startFrom for the next (older) page")


_MATCHED = "messages of the filter found by this call and acted on"
_FAILED = (
    "not done: Kafka did not acknowledge (503); the call stopped and nextCursor repeats the"
    " page, skipping what was done"
)
_SCANNED = "stored messages read by this call (matching or not)"
_NEXT = "pass as cursor (with the same filter) to go on; null: nothing left to look at"


class BulkAbortResult(BaseModel):
    matched: int = Field(description=_MATCHED)
    aborted: int
    tooLate: int = Field(
        description="within the cancel guard, or delivered first (as 409 too_late)"
    )
    notAbortable: int = Field(description="no longer READY or QUEUED when its turn came")
    failed: int = Field(
        description=_FAILED + "; an abort answered 503 has its record ABORTED already, so it"
        " no longer matches"
    )
    scanned: int = Field(description=_SCANNED)
    nextCursor: str | None = Field(description=_NEXT)


class BulkRedriveResult(BaseModel):
    matched: int = Field(description=_MATCHED)
    redriven: int
    notRedrivable: int = Field(description="no longer FAILED when its turn came")
    failed: int = Field(description=_FAILED)
    scanned: int = Field(description=_SCANNED)
    nextCursor: str | None = Field(description=_NEXT)


class ScheduleOut(BaseModel):
    scheduleId: str
    appId: str
    expression: str = Field(description="normalised: a 5-field cron, a macro or rate(N unit)")
    timezone: str
    start: str | None
    end: str | None
    maxOccurrences: int | None
    catchUp: str = Field(description="latest, skip or all")
    catchUpLimit: int | None = Field(description="with catchUp all only")
    payload: object
    kafkaKey: str | None
    flexibleWindowMs: int = Field(
        description="each occurrence is delivered within [occurrence, occurrence + this]; 0: none"
    )
    paused: bool
    createdAt: str
    updatedAt: str
    createdUntil: str | None = Field(
        description="the runner's cursor: every occurrence up to it exists as a message (source"
        " schedule:<scheduleId>) or was skipped by the catch-up policy"
    )
    nextOccurrence: str | None = Field(
        description="the first occurrence after now and after createdUntil; null when paused"
        " or when no occurrence is left"
    )


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    next: str | None = Field(description="pass as startFrom for the next page")


class LogOut(BaseModel):
    timestamp: str
    status: str
    data: dict[str, object]


class LogList(BaseModel):
    logs: list[LogOut]


class UsageDayOut(BaseModel):
    date: str
    ingested: int
    sent: int
    failed: int


class UsageOut(BaseModel):
    appId: str
    approximate: bool = Field(description="counters may count a replayed event twice")
    days: list[UsageDayOut]


class RotatedSecret(BaseModel):
    signingSecret: str = Field(description=WEBHOOK_VERIFY_HELP)
    previousSecretValidUntil: str = Field(
        description="until then each delivery carries a second signature, made with the"
        " previous secret"
    )


class Deleted(BaseModel):
    id: str
    deleted: bool


class Deactivated(BaseModel):
    id: str
    active: bool
