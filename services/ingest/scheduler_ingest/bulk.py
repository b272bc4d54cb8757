"""Bulk abort and bulk redrive: the single-message operation (MessageService.abort / redrive)
applied to each of an application's messages that match a filter, a bounded slice per call.

The filter is a status and a range of `sendAt` (the time the message was scheduled for, as its
API view shows it). Nothing indexes an app's messages by `sendAt` (the listing is by creation
time; the bucket store holds only the READY messages not yet released, by due time), so a call
pages through the app's listing, newest first, and judges every message it reads. It stops at
`limit` matches, at SCAN_MAX messages read, or once TIME_BUDGET_MS is spent, and answers a
cursor to continue from: a client loops until `nextCursor` is null.

Repeating a call is safe: what it did no longer matches (an aborted message is ABORTED, a
redriven one READY), and a redrive loop skips the messages whose record changed after its first
call (the cursor carries that instant), so one that failed again meanwhile is not redriven twice.
When an operation answered 503 the call stops after that page and its cursor is the page's
start again, so following `nextCursor` repeats what is not done.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scheduler.domain.errors import ValidationError
from scheduler.domain.sendat import format_rfc3339_ms, parse_instant
from scheduler.domain.status import ABORTABLE, Status
from scheduler.store.cursor import decode_cursor, encode_cursor
from scheduler.store.ports import MessageView
from scheduler_ingest.errors import ApiError
from scheduler_ingest.messages import MessageService

log = logging.getLogger("scheduler_ingest.bulk")

LIMIT_DEFAULT = 1_000
LIMIT_MAX = 10_000
SCAN_MAX = 20_000  # stored messages read per call at most
PAGE = 500  # stored messages read per listing request
CONCURRENCY = 8  # single-message operations in flight per call
TIME_BUDGET_MS = 10_000  # no listing page is started after this long
MAX_PAGES = 2 * SCAN_MAX // PAGE  # listing requests per call (a page can come back short)
ALLOWED_FIELDS = frozenset({"status", "sendAtFrom", "sendAtTo", "limit", "cursor"})


class BulkOperation(StrEnum):
    ABORT = "abort"
    REDRIVE = "redrive"

    @property
    def statuses(self) -> frozenset[Status]:
        """The statuses the single operation accepts (the default filter)."""
        return ABORTABLE if self is BulkOperation.ABORT else frozenset({Status.FAILED})


@dataclass(frozen=True)
class BulkCursor:
    """Where a loop stands: after a listing position (None: from the newest), the instant of
    its first call, and a digest of its filter (a cursor serves the filter that made it)."""

    after: str | None
    as_of_ms: int
    filter_key: str

    def encode(self) -> str:
        raw = json.dumps({"a": self.after, "t": self.as_of_ms, "f": self.filter_key})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> BulkCursor:
        """Raises ValueError for a cursor that this route did not make."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            fields = json.loads(raw)
            after, as_of, key = fields["a"], fields["t"], fields["f"]
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ValueError("not a cursor of this route") from exc
        if after is not None:
            if not isinstance(after, str):
                raise ValueError("not a cursor of this route")
            decode_cursor(after)  # raises ValueError
        if not isinstance(as_of, int) or isinstance(as_of, bool) or not isinstance(key, str):
            raise ValueError("not a cursor of this route")
        return cls(after, as_of, key)


@dataclass(frozen=True)
class BulkRequest:
    operation: BulkOperation
    statuses: frozenset[Status]
    send_at_from_ms: int | None  # inclusive
    send_at_to_ms: int | None  # exclusive
    limit: int
    cursor: BulkCursor | None

    @property
    def filter_key(self) -> str:
        what = [
            self.operation.value,
            sorted(s.value for s in self.statuses),
            self.send_at_from_ms,
            self.send_at_to_ms,
        ]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def matches(self, view: MessageView, as_of_ms: int) -> bool:
        c, s = view.content, view.state
        if s.status not in self.statuses:
            return False
        if self.send_at_from_ms is not None and c.send_at_ms < self.send_at_from_ms:
            return False
        if self.send_at_to_ms is not None and c.send_at_ms >= self.send_at_to_ms:
            return False
        # A redrive loop leaves alone what changed after its first call (a message it redrove
        # that failed again, repeating a call): only aborts are final.
        return self.operation is BulkOperation.ABORT or s.at_ms <= as_of_ms


def parse_bulk(operation: BulkOperation, raw: Any) -> BulkRequest:
    """The filter body; raises ValidationError with the API's tokens."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationError("invalid_request", "the body must be a JSON object (a filter)")
    unknown = sorted(set(raw) - ALLOWED_FIELDS)
    if unknown:
        raise ValidationError(
            "unknown_field",
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
        )
    allowed = operation.statuses
    names = " or ".join(sorted(s.value for s in allowed))
    statuses = allowed
    status = raw.get("status")
    if status is not None:
        try:
            wanted = Status(status.upper()) if isinstance(status, str) else None
        except ValueError:
            wanted = None
        if wanted not in allowed:
            raise ValidationError("invalid_parameter", f"status must be {names} to {operation}")
        statuses = frozenset({wanted})
    start = parse_instant(raw.get("sendAtFrom"), "invalid_parameter", "sendAtFrom")
    end = parse_instant(raw.get("sendAtTo"), "invalid_parameter", "sendAtTo")
    if start is not None and end is not None and end <= start:
        raise ValidationError("invalid_parameter", "sendAtTo must be later than sendAtFrom")
    limit = raw.get("limit", LIMIT_DEFAULT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= LIMIT_MAX:
        raise ValidationError("invalid_parameter", f"limit must be an integer, 1 to {LIMIT_MAX}")
    request = BulkRequest(operation, statuses, start, end, limit, None)
    text = raw.get("cursor")
    if text is None:
        return request
    try:
        if not isinstance(text, str):
            raise ValueError("not a string")
        cursor = BulkCursor.decode(text)
    except ValueError:
        raise ValidationError("invalid_cursor", "cursor is not a cursor of this route") from None
    if cursor.filter_key != request.filter_key:
        raise ValidationError(
            "invalid_cursor", "the cursor belongs to another filter: send the same filter with it"
        )
    return BulkRequest(operation, statuses, start, end, limit, cursor)


@dataclass
class BulkResult:
    operation: BulkOperation
    matched: int = 0
    done: int = 0  # aborted / redriven
    too_late: int = 0
    refused: int = 0  # not_abortable / not_redrivable (it changed since it was read)
    failed: int = 0  # 503: not done, the call stops; repeating it does what is left
    scanned: int = 0
    next_cursor: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.operation is BulkOperation.ABORT:
            outcomes = {
                "aborted": self.done,
                "tooLate": self.too_late,
                "notAbortable": self.refused,
            }
        else:
            outcomes = {"redriven": self.done, "notRedrivable": self.refused}
        return {
            "matched": self.matched,
            **outcomes,
            "failed": self.failed,
            "scanned": self.scanned,
            "nextCursor": self.next_cursor,
        }


_OUTCOMES: Mapping[BulkOperation, tuple[str, str]] = {
    BulkOperation.ABORT: ("aborted", "not_abortable"),
    BulkOperation.REDRIVE: ("redriven", "not_redrivable"),
}


class BulkRunner:
    def __init__(self, messages: MessageService) -> None:
        self._messages = messages
        self._clock = messages.clock
        self._metrics = messages.metrics

    async def run(self, app_id: str, request: BulkRequest, by: str = "api") -> BulkResult:
        started = self._clock.monotonic_ms()
        as_of = request.cursor.as_of_ms if request.cursor else self._clock.now_ms()
        after = request.cursor.after if request.cursor else None
        result = BulkResult(request.operation)
        gate = asyncio.Semaphore(CONCURRENCY)
        more, pages = True, 0
        while more and result.matched < request.limit and result.scanned < SCAN_MAX:
            if pages >= MAX_PAGES or self._clock.monotonic_ms() - started >= TIME_BUDGET_MS:
                break
            pages += 1
            page_start = after
            size = min(PAGE, SCAN_MAX - result.scanned)
            views, next_cursor = await self._messages.list(app_id, None, after, size)
            batch: list[MessageView] = []
            for i, view in enumerate(views):
                result.scanned += 1
                if not request.matches(view, as_of):
                    continue
                batch.append(view)
                if result.matched + len(batch) >= request.limit:  # cut the page here
                    c = view.content
                    last = i == len(views) - 1
                    after = (
                        None
                        if last and next_cursor is None
                        else encode_cursor(c.created_ms, c.message_id)
                    )
                    more = after is not None
                    break
            else:
                after, more = next_cursor, next_cursor is not None
            result.matched += len(batch)
            await asyncio.gather(*(self._one(app_id, v, request, result, gate, by) for v in batch))
            if result.failed:  # Kafka refused: stop, and have the caller repeat this page
                after, more = page_start, True
                break
        result.next_cursor = BulkCursor(after, as_of, request.filter_key).encode() if more else None
        log.info(
            "bulk %s of %s (%s): %s",
            request.operation,
            app_id,
            describe(request),
            {k: v for k, v in result.to_json().items() if k != "nextCursor"},
        )
        return result

    async def _one(
        self,
        app_id: str,
        view: MessageView,
        request: BulkRequest,
        result: BulkResult,
        gate: asyncio.Semaphore,
        by: str,
    ) -> None:
        operation = request.operation
        done, refused = _OUTCOMES[operation]
        message_id = view.content.message_id
        async with gate:
            try:
                if operation is BulkOperation.ABORT:
                    await self._messages.abort(app_id, message_id, by)
                else:
                    await self._messages.redrive(app_id, message_id)
                outcome = done
            except ApiError as exc:
                outcome = exc.token if exc.token in ("too_late", refused) else "failed"
                if outcome == "failed" and exc.status != 503:
                    log.warning("bulk %s of %s/%s: %s", operation, app_id, message_id, exc)
            except Exception as exc:  # noqa: BLE001 - one message's store error fails it alone
                log.warning("bulk %s of %s/%s failed: %r", operation, app_id, message_id, exc)
                outcome = "failed"
        if outcome == done:
            result.done += 1
        elif outcome == "too_late":
            result.too_late += 1
        elif outcome == refused:
            result.refused += 1
        else:
            result.failed += 1
        self._metrics.message_operations.labels(f"bulk_{operation}", outcome).inc()


def describe(request: BulkRequest) -> str:
    """The filter in words, for logs."""
    parts = [f"status in {sorted(s.value for s in request.statuses)}"]
    if request.send_at_from_ms is not None:
        parts.append(f"sendAt >= {format_rfc3339_ms(request.send_at_from_ms)}")
    if request.send_at_to_ms is not None:
        parts.append(f"sendAt < {format_rfc3339_ms(request.send_at_to_ms)}")
    return ", ".join(parts)
