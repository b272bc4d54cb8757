"""The application form: browser fields to the API's request bodies (ApplicationCreate,
ApplicationUpdate), so the console validates exactly like `POST/PUT /applications`. Errors come
back per form field, for the messages next to each input; the service's own refusals (a bad
endpoint, a delivery policy that contradicts itself) too, through `show_service_error`.

Also the smaller forms' parsing: a message's new time (RescheduleForm), the bulk abort and
redrive filter (BulkForm), a schedule's flexible window typed in minutes."""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import pydantic

from scheduler.domain import policy as bounds
from scheduler.domain.errors import ValidationError
from scheduler.domain.policy import DeliveryPolicy
from scheduler.domain.sendat import format_rfc3339_ms, parse_send_at
from scheduler.domain.window import MAX_WINDOW_MS
from scheduler.store.ports import Application
from scheduler_ingest.bulk import BulkOperation, BulkRequest, parse_bulk
from scheduler_ingest.errors import ApiError
from scheduler_ingest.models import (
    ApplicationCreate,
    ApplicationUpdate,
)

M = TypeVar("M", bound=pydantic.BaseModel)


def human_ms(ms: float) -> str:
    """A duration for people: 500 ms, 2.5 s, 1 min, 1 h, 30 days."""
    for unit, size in (("day", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000)):
        if ms >= size:
            value = f"{ms / size:.1f}".removesuffix(".0")
            return f"{value} {unit}{'s' if unit == 'day' and value != '1' else ''}"
    return f"{ms:g} ms"


def _number(value: float) -> str:
    """As typed back into the form: 3, 0.5, 50 (not 50.0)."""
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


@dataclass(frozen=True)
class PolicyField:
    """One input of the "Delivery policy" fieldset: its form name is the DeliveryPolicy field's,
    `api` the ApplicationCreate.deliveryPolicy field's."""

    name: str
    api: str
    label: str
    what: str
    low: float
    high: float
    unit: str = ""  # "ms": a duration; "/s": a rate (the only number that may have decimals)
    note: str = ""  # a condition beyond the bounds

    @property
    def decimal(self) -> bool:
        return self.unit == "/s"

    def _bound(self, value: float) -> str:
        text = f"{value:,g}" if self.decimal else f"{int(value):,}"
        return f"{text} ({human_ms(value)})" if self.unit == "ms" and value >= 1_000 else text

    @property
    def bounds(self) -> str:
        return f"{self._bound(self.low)} to {self._bound(self.high)}"

    @property
    def hint(self) -> str:
        return f"{self.what}: {self.bounds}{self.note}."

    @property
    def error(self) -> str:
        kind = "a number" if self.decimal else "a whole number (digits only)"
        return f"{self.label}: {kind} from {self.bounds}{self.note}, or empty."

    def shown(self, value: float) -> str:
        """The value set, for the application's page."""
        if self.unit == "ms":
            text = f"{int(value):,} ms"
            return f"{text} ({human_ms(value)})" if value >= 1_000 else text
        if self.decimal:
            return f"{value:,g} per second"
        return f"{int(value):,}"


POLICY_FIELDS = (
    PolicyField(
        "max_attempts",
        "maxAttempts",
        "Max attempts",
        "Attempts in all, the first included",
        1,
        bounds.MAX_ATTEMPTS,
    ),
    PolicyField(
        "min_backoff_ms",
        "minBackoffMs",
        "Min backoff (ms)",
        "Delay after the first failed attempt, doubled after each failure",
        0,
        bounds.MAX_BACKOFF_MS,
        "ms",
    ),
    PolicyField(
        "max_backoff_ms",
        "maxBackoffMs",
        "Max backoff (ms)",
        "Longest delay between two attempts",
        0,
        bounds.MAX_BACKOFF_MS,
        "ms",
        ", not below the min backoff",
    ),
    PolicyField(
        "max_event_age_ms",
        "maxEventAgeMs",
        "Max event age (ms)",
        "A message this long past its send time goes FAILED without another attempt"
        " (time paused does not count)",
        bounds.MIN_EVENT_AGE_MS,
        bounds.MAX_EVENT_AGE_MS,
        "ms",
    ),
    PolicyField(
        "rate_per_second",
        "ratePerSecond",
        "Rate limit (per second)",
        "Deliveries per second at most; those over it wait, never dropped",
        bounds.MIN_RATE,
        bounds.MAX_RATE,
        "/s",
    ),
    PolicyField(
        "rate_burst",
        "rateBurst",
        "Rate burst",
        "Deliveries at once after an idle spell",
        1,
        bounds.MAX_BURST,
        "",
        ", with a rate limit only",
    ),
    PolicyField(
        "max_concurrent",
        "maxConcurrent",
        "Max concurrent requests",
        "REST requests in flight at once, per dispatcher instance",
        1,
        bounds.MAX_CONCURRENCY,
    ),
    PolicyField(
        "http_timeout_ms",
        "httpTimeoutMs",
        "HTTP timeout (ms)",
        "A REST request unanswered this long is a failed attempt (retried)",
        bounds.MIN_HTTP_TIMEOUT_MS,
        bounds.MAX_HTTP_TIMEOUT_MS,
        "ms",
    ),
)
RATE_HOLD = "rate_hold_counts_toward_age"  # the policy's one checkbox
_BY_API = {f.api: f for f in POLICY_FIELDS}

# API field path -> form field name
_FIELDS: dict[tuple[str, ...], str] = {
    ("name",): "name",
    ("type",): "type",
    ("endpoint",): "endpoint",
    ("description",): "description",
    ("sendBackFormat",): "send_back_format",
    ("httpAuthorization", "headerName"): "auth_header_name",
    ("httpAuthorization", "headerValue"): "auth_header_value",
    ("httpAuthorization",): "auth_header_name",
    **{("deliveryPolicy", f.api): f.name for f in POLICY_FIELDS},
    ("deliveryPolicy", "rateHoldCountsTowardAge"): RATE_HOLD,
    ("failureDestination", "type"): "failure_type",
    ("failureDestination", "endpoint"): "failure_endpoint",
    ("failureDestination",): "failure_type",
}
_MESSAGES = {
    "name": "Enter a name (at most 200 characters).",
    "type": "Choose REST or KAFKA.",
    "endpoint": "Enter the endpoint: an http(s) URL for REST, a topic name for KAFKA.",
    "description": "The description is too long (at most 2,000 characters).",
    "send_back_format": "Choose a body format.",
    "auth_header_name": "A header name is letters, digits and - only (e.g. Authorization).",
    "auth_header_value": "Enter the header value (no control characters).",
    **{f.name: f.error for f in POLICY_FIELDS},
    RATE_HOLD: "Tick the box or leave it.",
    "failure_type": "Choose none, REST or KAFKA for the failure destination.",
    "failure_endpoint": "Enter the failure destination: an http(s) URL for REST, a topic name"
    " for KAFKA.",
}
# The form's order, for the list of errors above it.
_ORDER = [
    "name",
    "type",
    "endpoint",
    "description",
    "auth_header_name",
    "auth_header_value",
    "send_back_format",
    *(f.name for f in POLICY_FIELDS),
    RATE_HOLD,
    "failure_type",
    "failure_endpoint",
]
FAILURE_WITHOUT_TYPE = (
    "Choose REST or KAFKA for the failure destination, or empty its endpoint for none."
)
POLICY_ERRORS = frozenset({"invalid_delivery_policy"})
# Errors of an endpoint (the app's or its failure destination's): shown next to that field.
ENDPOINT_ERRORS = frozenset({"invalid_endpoint", "unknown_topic"})
FAILURE_ENDPOINT_ERRORS = frozenset({"invalid_failure_endpoint", "unknown_failure_topic"})


def policy_rows(policy: DeliveryPolicy) -> list[tuple[str, str]]:
    """The overrides a policy sets, (label, value) in the form's order; [] for none."""
    rows = []
    for f in POLICY_FIELDS:
        value = getattr(policy, f.name)
        if value is not None:
            rows.append((f.label.split(" (")[0], f.shown(value)))
    if policy.rate_hold_counts_toward_age:
        rows.append(("Rate limit hold", "counts toward the max event age"))
    return rows


@dataclass
class AppForm:
    """What the user typed (echoed back on errors; the header value never is)."""

    name: str = ""
    type: str = "REST"
    endpoint: str = ""
    description: str = ""
    auth_header_name: str = ""
    auth_header_value: str = ""
    send_back_format: str = "payload_field"
    remove_auth: bool = False
    # The delivery policy as typed, by PolicyField.name ("" or missing: the service's setting).
    policy: dict[str, str] = field(default_factory=dict)
    rate_hold_counts_toward_age: bool = False
    failure_type: str = ""  # "" none, REST or KAFKA
    failure_endpoint: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, form: Mapping[str, Any]) -> AppForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(
            name=text("name"),
            type=text("type") or "REST",
            endpoint=text("endpoint"),
            description=text("description"),
            auth_header_name=text("auth_header_name"),
            auth_header_value=text("auth_header_value"),
            send_back_format=text("send_back_format") or "payload_field",
            remove_auth=form.get("remove_auth") == "on",
            policy={f.name: text(f.name) for f in POLICY_FIELDS},
            rate_hold_counts_toward_age=form.get(RATE_HOLD) == "on",
            failure_type=text("failure_type"),
            failure_endpoint=text("failure_endpoint"),
        )

    @classmethod
    def of_app(cls, app: Application) -> AppForm:
        values = {f.name: getattr(app.policy, f.name) for f in POLICY_FIELDS}
        return cls(
            name=app.name,
            type=app.type,
            endpoint=app.endpoint,
            description=app.description or "",
            auth_header_name=app.auth_header_name or "",
            send_back_format=app.send_back_format,
            policy={k: _number(v) for k, v in values.items() if v is not None},
            rate_hold_counts_toward_age=app.policy.rate_hold_counts_toward_age,
            failure_type=app.failure_type or "",
            failure_endpoint=app.failure_endpoint or "",
        )

    def _auth(self, kept_value: str | None) -> dict[str, str] | None:
        if not self.auth_header_name and not self.auth_header_value:
            return None
        value = self.auth_header_value or kept_value or ""
        return {"headerName": self.auth_header_name, "headerValue": value}

    def _policy(self) -> dict[str, Any] | None:
        """The deliveryPolicy body (the typed text, for the model to parse), None if empty."""
        body: dict[str, Any] = {
            f.api: self.policy[f.name] for f in POLICY_FIELDS if self.policy.get(f.name)
        }
        if self.rate_hold_counts_toward_age:
            body["rateHoldCountsTowardAge"] = True
        return body or None

    def _failure(self) -> dict[str, str] | None:
        if not self.failure_type:
            return None
        return {"type": self.failure_type, "endpoint": self.failure_endpoint}

    def to_create(self) -> ApplicationCreate | None:
        """The API body, or None with `errors` filled in."""
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "endpoint": self.endpoint,
            "description": self.description or None,
            "sendBackFormat": self.send_back_format,
        }
        auth = self._auth(None)
        if auth is not None:
            body["httpAuthorization"] = auth
        for name, value in (
            ("deliveryPolicy", self._policy()),
            ("failureDestination", self._failure()),
        ):
            if value is not None:
                body[name] = value
        return self._checked(ApplicationCreate, body)

    def to_update(self, app: Application) -> ApplicationUpdate | None:
        """A full update of the editable fields. A blank header value keeps the stored one (it
        is never sent to the browser); "remove" drops the header. The delivery policy and the
        failure destination are replaced as shown: all policy fields empty clear the policy,
        "none" the failure destination."""
        body: dict[str, Any] = {
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description or None,
            "sendBackFormat": self.send_back_format,
            "deliveryPolicy": self._policy(),
            "failureDestination": self._failure(),
        }
        if self.remove_auth:
            body["httpAuthorization"] = None
        else:
            kept = app.auth_header_value if app.auth_header_name else None
            auth = self._auth(kept)
            if auth is not None:
                body["httpAuthorization"] = auth
        return self._checked(ApplicationUpdate, body)

    def _checked(self, model: builtins.type[M], body: dict[str, Any]) -> M | None:
        found = _validated(model, body, self.errors)
        if not self.failure_type and self.failure_endpoint:
            # An endpoint typed without a type: said, not silently dropped.
            self.errors.setdefault("failure_type", FAILURE_WITHOUT_TYPE)
        self._sort_errors()
        return None if self.errors else found

    def _sort_errors(self) -> None:
        ordered = sorted(self.errors.items(), key=lambda kv: _ORDER.index(kv[0]))
        self.errors.clear()
        self.errors.update(ordered)

    def show_service_error(self, exc: ApiError, stored: Application | None = None) -> bool:
        """Put a refusal of ControlService.create_app / update_app next to the field it is
        about; False if it is about none of them (the caller raises it). `stored`: the app
        being edited."""
        if exc.token in POLICY_ERRORS:
            self.errors[self._policy_field(exc.message)] = exc.message
        elif exc.token in ENDPOINT_ERRORS:
            self.errors["endpoint"] = exc.message
        elif exc.token in FAILURE_ENDPOINT_ERRORS:
            self.errors["failure_endpoint"] = exc.message.removeprefix("failureDestination: ")
        else:
            return False
        self._sort_errors()
        return True

    def _policy_field(self, message: str) -> str:
        """The policy field a PolicyError message names first ("minBackoffMs must not ...")."""
        first = re.match(r"\w+", message)
        found = _BY_API.get(first.group(0)) if first else None
        if found is not None:
            return found.name
        typed = [f.name for f in POLICY_FIELDS if self.policy.get(f.name)]
        return typed[0] if typed else POLICY_FIELDS[0].name


def _validated(model: type[M], body: dict[str, Any], errors: dict[str, str]) -> M | None:
    """The model, or None with one message per form field that failed."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(p) for p in error["loc"])
            name = next(
                (_FIELDS[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in _FIELDS), "name"
            )
            errors.setdefault(name, _MESSAGES[name])
        return None


# -- times typed in forms ---------------------------------------------------------------------

TIME_FORMAT = (
    "RFC 3339 with an offset, which says the zone: Z is UTC (2030-01-01T12:00:00Z),"
    " +01:00 is Berlin in winter (2030-01-01T13:00:00+01:00)"
)


def instant_value(text: str) -> str | int | None:
    """A time as typed, for the API's parsers: None if empty, digits as epoch milliseconds (the
    API's number form; as a string it would be refused), anything else as RFC 3339 text."""
    if not text:
        return None
    return int(text) if text.isdigit() else text


# -- reschedule a message ---------------------------------------------------------------------


@dataclass
class RescheduleForm:
    """The new time of a message, as typed (kept on errors), and the refusal to show."""

    send_at: str = ""
    error: str = ""

    @classmethod
    def of(cls, form: Mapping[str, Any]) -> RescheduleForm:
        value = form.get("send_at")
        return cls(send_at=value.strip() if isinstance(value, str) else "")

    def send_at_ms(self) -> int | None:
        """The new sendAt in epoch ms (as `PUT /messages/{id}/reschedule` reads it), or None
        with `error` set."""
        if not self.send_at:
            self.error = f"Enter the new send time: {TIME_FORMAT}."
            return None
        try:
            return parse_send_at(instant_value(self.send_at))
        except ValidationError as exc:
            self.error = exc.message
            return None

    def show_service_error(self, exc: ApiError) -> bool:
        """A refusal of MessageService.reschedule, said for the form; False for the others (a
        404 and the like: the caller raises it)."""
        if exc.token in ("invalid_sendAt", "missing_sendAt"):
            self.error = exc.message
        elif exc.token == "too_late":  # noqa: S105 - an error token
            self.error = f"Too late to reschedule: {exc.message}. It was not moved."
        elif exc.token == "not_reschedulable":  # noqa: S105 - an error token
            self.error = f"Not rescheduled: {exc.message}."
        elif exc.status == 503:
            self.error = f"Not finished: {exc.message}."
        else:
            return False
        return True


# -- bulk abort and redrive ---------------------------------------------------------------------


@dataclass(frozen=True)
class BulkChoice:
    operation: BulkOperation
    status: str | None  # None: every status the operation takes
    label: str
    what: str  # the messages, in words


BULK_CHOICES: dict[str, BulkChoice] = {
    "abort": BulkChoice(
        BulkOperation.ABORT, None, "Abort READY and QUEUED messages", "READY or QUEUED message"
    ),
    "abort_ready": BulkChoice(
        BulkOperation.ABORT, "READY", "Abort READY messages only", "READY message"
    ),
    "abort_queued": BulkChoice(
        BulkOperation.ABORT, "QUEUED", "Abort QUEUED messages only", "QUEUED message"
    ),
    "redrive": BulkChoice(BulkOperation.REDRIVE, None, "Redrive FAILED messages", "FAILED message"),
}


@dataclass
class BulkForm:
    """The bulk action form of the messages page: what to do and an optional range of sendAt,
    as typed (kept on errors and carried through the confirmation and each "continue")."""

    action: str = "abort"
    send_at_from: str = ""
    send_at_to: str = ""
    cursor: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, form: Mapping[str, Any]) -> BulkForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(
            action=text("action"),
            send_at_from=text("send_at_from"),
            send_at_to=text("send_at_to"),
            cursor=text("cursor"),
        )

    @property
    def choice(self) -> BulkChoice | None:
        return BULK_CHOICES.get(self.action)

    def to_request(self) -> BulkRequest | None:
        """The filter as `POST /messages/abort` or `/redrive` reads it, or None with `errors`
        filled in (by form field)."""
        choice = self.choice
        if choice is None:
            self.errors["action"] = "Choose what to do."
            return None
        body: dict[str, Any] = {}
        if choice.status is not None:
            body["status"] = choice.status
        for name, value in (("sendAtFrom", self.send_at_from), ("sendAtTo", self.send_at_to)):
            instant = instant_value(value)
            if instant is not None:
                body[name] = instant
        if self.cursor:
            body["cursor"] = self.cursor
        try:
            return parse_bulk(choice.operation, body)
        except ValidationError as exc:
            if exc.token == "invalid_cursor":  # noqa: S105 - an error token
                self.errors["cursor"] = (
                    "Where to continue from was not recognised (another filter's, or altered)."
                    " Submit again to start over from the newest messages: what was done is"
                    " not done twice."
                )
            elif exc.message.startswith("sendAtTo"):
                self.errors["send_at_to"] = exc.message
            elif exc.message.startswith("sendAtFrom"):
                self.errors["send_at_from"] = exc.message
            else:
                self.errors["action"] = exc.message
            return None

    def describe(self, request: BulkRequest) -> str:
        """The filter in words, with the range in UTC (as the offsets typed resolve)."""
        choice = self.choice
        assert choice is not None
        start, end = request.send_at_from_ms, request.send_at_to_ms
        parts = [f"every {choice.what}"]
        if start is not None:
            parts.append(f"with a send time at or after {format_rfc3339_ms(start)}")
        if end is not None:
            joint = "and before" if start is not None else "with a send time before"
            parts.append(f"{joint} {format_rfc3339_ms(end)}")
        if start is None and end is None:
            parts.append("whatever its send time")
        return " ".join(parts)

    def fields(self, cursor: str | None = None) -> dict[str, str]:
        """The hidden fields that repeat this filter (a confirmation, a "continue")."""
        shown = {
            "action": self.action,
            "send_at_from": self.send_at_from,
            "send_at_to": self.send_at_to,
        }
        if cursor:
            shown["cursor"] = cursor
        return shown


# -- a schedule's flexible window, in minutes -------------------------------------------------

WINDOW_MAX_MINUTES = MAX_WINDOW_MS // 60_000  # 1,440: a day
WINDOW_ERROR = (
    f"Flexible window: minutes from 0 to {WINDOW_MAX_MINUTES:,} (a day), e.g. 15 or 2.5;"
    " 0 or empty for none."
)
_MINUTES = re.compile(r"\d{1,5}(?:\.\d{1,4})?")


def window_ms_of_minutes(text: str) -> int | None:
    """The flexibleWindowMs of a window typed in minutes: 0 for none (empty or 0), None if it is
    not a number of minutes within a day."""
    if not text:
        return 0
    if not _MINUTES.fullmatch(text):
        return None
    try:
        ms = int((Decimal(text) * 60_000).to_integral_value())
    except InvalidOperation:
        return None
    return ms if ms <= MAX_WINDOW_MS else None


def minutes_of_ms(ms: int) -> str:
    """A window in minutes, as typed back: 15, 2.5 (not 15.0)."""
    text = f"{Decimal(ms) / 60_000:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def window_shown(ms: int | None) -> str:
    """A schedule's window, for its page."""
    if not ms:
        return "none"
    minutes = minutes_of_ms(ms)
    whole, dot, fraction = minutes.partition(".")
    return f"{int(whole):,}{dot}{fraction} min ({ms:,} ms)"
