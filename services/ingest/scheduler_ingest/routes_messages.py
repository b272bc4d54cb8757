"""Message routes: `/messages...` with a data key, `/applications/{appId}/messages...` with a
control key (the dashboard form). Both reach the same MessageService, scoped to one app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scheduler.domain.errors import ValidationError
from scheduler.domain.sendat import parse_send_at
from scheduler_ingest.bodies import (
    SCHEDULE_SCHEMA,
    Draft,
    batch_schema,
    json_body,
    loads,
    parse_item,
)
from scheduler_ingest.bulk import LIMIT_DEFAULT, LIMIT_MAX, BulkOperation, BulkRunner, parse_bulk
from scheduler_ingest.errors import ApiError
from scheduler_ingest.gateway import ControlKeyDep, DataKeyDep, Gateway, GatewayDep, errors, invalid
from scheduler_ingest.messages import Accepted, log_json, message_json
from scheduler_ingest.models import (
    BatchResult,
    BulkAbortResult,
    BulkRedriveResult,
    ErrorBody,
    LogList,
    MessageList,
    MessageOut,
    Scheduled,
)

MESSAGE_ERRORS = errors(401, 403, 404)
Status_ = Annotated[
    str | None, Query(description="READY, QUEUED, SENT, FAILED or ABORTED", max_length=16)
]
StartFrom = Annotated[
    str | None, Query(description="the `next` cursor of the previous page", max_length=200)
]
Limit = Annotated[int, Query(ge=1, le=500)]
_INSTANT = {
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": 100000000000},
    ]
}
RESCHEDULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sendAt"],
    "additionalProperties": False,
    "properties": {
        "sendAt": {
            "description": "the new time, as when scheduling: RFC 3339 with an offset, or epoch"
            " milliseconds (>= 10^11); in the past up to the past window means now",
            **_INSTANT,
        }
    },
}


def bulk_schema(operation: BulkOperation) -> dict[str, Any]:
    statuses = sorted(s.value for s in operation.statuses)
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "status": {
                "type": "string",
                "enum": statuses,
                "description": f"default: {' and '.join(statuses)}",
            },
            "sendAtFrom": {"description": "sendAt at or after this", **_INSTANT},
            "sendAtTo": {"description": "sendAt before this", **_INSTANT},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": LIMIT_MAX,
                "default": LIMIT_DEFAULT,
                "description": "matching messages acted on per call at most",
            },
            "cursor": {
                "type": "string",
                "description": "the previous answer's nextCursor, with the same filter",
            },
        },
    }


def parse_reschedule(raw: Any) -> int:
    """The new sendAt of a reschedule body, in epoch ms; raises ValidationError."""
    if not isinstance(raw, dict):
        raise ValidationError("invalid_request", 'the body must be {"sendAt": ...}')
    unknown = sorted(set(raw) - {"sendAt"})
    if unknown:
        raise ValidationError(
            "unknown_field", f"unknown field(s) {', '.join(unknown)}; allowed: sendAt"
        )
    return parse_send_at(raw.get("sendAt"))


def build_router(batch_limit: int) -> APIRouter:
    router = APIRouter()

    # -- data plane -----------------------------------------------------------------------------

    async def schedule(request: Request, gw: GatewayDep, who: DataKeyDep) -> JSONResponse:
        try:
            draft = parse_item(loads(await request.body()))
        except ValidationError as exc:
            raise invalid(gw, exc) from None
        gw.rate.take(who.key_id)
        gw.quota.take(who.app_id)
        try:
            await gw.pending.take(who.app_id)
        except ApiError as exc:
            gw.quota.give_back(who.app_id, 1)
            known = await gw.messages.known(who.app_id, draft)
            if known is not None:  # a retry of an accepted request: not a new pending message
                return JSONResponse(known.to_json())
            gw.metrics.rejects.labels(exc.token).inc()
            raise
        try:
            accepted = await gw.messages.schedule(who.app_id, draft)
        except ApiError as exc:
            gw.quota.give_back(who.app_id, 1)
            gw.metrics.rejects.labels(exc.token).inc()
            raise
        finally:
            gw.pending.release(who.app_id)
        return JSONResponse(accepted.to_json())

    for path in ("/messages", "/message"):
        router.add_api_route(
            path,
            schedule,
            methods=["POST"],
            tags=["messages"],
            summary="Schedule a message"
            + (" (alias of POST /messages)" if path == "/message" else ""),
            operation_id="schedule" if path == "/messages" else "schedule_alias",
            openapi_extra=json_body(SCHEDULE_SCHEMA),
            responses={
                200: {"model": Scheduled},
                **errors(400, 401, 403, 413, 415, 429, 503),
                409: {
                    "model": ErrorBody,
                    "description": "idempotency_conflict: the idempotencyKey was used for a"
                    " different request (payload, sendAt or kafkaKey); nothing was scheduled",
                },
            },
        )

    @router.post(
        "/messages/batch",
        tags=["messages"],
        summary="Schedule up to the batch limit of messages; per-item results, in order",
        openapi_extra=json_body(batch_schema(batch_limit)),
        responses={200: {"model": BatchResult}, **errors(400, 401, 403, 413, 415, 429, 503)},
    )
    async def schedule_batch(request: Request, gw: GatewayDep, who: DataKeyDep) -> JSONResponse:
        try:
            body = loads(await request.body())
        except ValidationError as exc:
            raise invalid(gw, exc) from None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ApiError(400, "invalid_request", 'the body must be {"messages": [...]}')
        if set(body) - {"messages"}:
            raise ApiError(400, "unknown_field", "only `messages` is allowed in a batch body")
        raw_items = body["messages"]
        if len(raw_items) > batch_limit:
            gw.metrics.rejects.labels("batch_too_large").inc()
            raise ApiError(
                413, "batch_too_large", f"{len(raw_items)} messages; the limit is {batch_limit}"
            )
        items: list[Draft | ValidationError] = []
        for raw in raw_items:
            try:
                items.append(parse_item(raw))
            except ValidationError as exc:
                items.append(exc)
        valid = sum(1 for item in items if isinstance(item, Draft))
        if valid:
            gw.rate.take(who.key_id, valid)
            gw.quota.take(who.app_id, valid)
            try:
                # The whole batch or nothing: no item is published when the valid ones together
                # would exceed the app's pending cap (repeats of known idempotency keys count too).
                await gw.pending.take(who.app_id, valid)
            except ApiError as exc:
                gw.quota.give_back(who.app_id, valid)
                gw.metrics.rejects.labels(exc.token).inc()
                raise
        try:
            results = await gw.messages.schedule_batch(who.app_id, items)
        finally:
            gw.pending.release(who.app_id, valid)
        out: list[dict[str, Any]] = []
        refused = 0
        for result in results:
            if isinstance(result, Accepted):
                out.append(result.to_json())
            else:
                refused += 1
                gw.metrics.rejects.labels(result.token).inc()
                out.append({"error": result.token, "message": result.message})
        unpublished = sum(1 for r in results if isinstance(r, ApiError) and r.status == 503)
        gw.quota.give_back(who.app_id, unpublished)
        if out and unpublished == len(out):
            raise ApiError(
                503,
                "unavailable",
                "Kafka did not acknowledge; nothing was stored, retry",
                {"Retry-After": str(gw.settings.retry_after_s)},
            )
        return JSONResponse({"results": out, "accepted": len(out) - refused, "rejected": refused})

    @router.get(
        "/messages",
        tags=["messages"],
        summary="The app's messages, newest first",
        responses={200: {"model": MessageList}, **errors(400, 401, 403)},
    )
    async def list_messages(
        gw: GatewayDep,
        who: DataKeyDep,
        status: Status_ = None,
        startFrom: StartFrom = None,
        limit: Limit = 50,
    ) -> JSONResponse:
        return await _list(gw, who.app_id, status, startFrom, limit)

    @router.get(
        "/messages/{messageId}",
        tags=["messages"],
        responses={200: {"model": MessageOut}, **MESSAGE_ERRORS},
    )
    async def get_message(gw: GatewayDep, who: DataKeyDep, messageId: str) -> JSONResponse:
        return JSONResponse(message_json(await gw.messages.get(who.app_id, messageId)))

    @router.get(
        "/messages/{messageId}/logs",
        tags=["messages"],
        responses={200: {"model": LogList}, **MESSAGE_ERRORS},
    )
    async def get_logs(gw: GatewayDep, who: DataKeyDep, messageId: str) -> JSONResponse:
        return await _logs(gw, who.app_id, messageId)

    @router.put(
        "/messages/{messageId}/abort",
        tags=["messages"],
        summary="Abort a READY or QUEUED message (409 too_late within the guard)",
        responses={200: {"model": MessageOut}, **errors(401, 403, 404, 409, 503)},
    )
    async def abort(gw: GatewayDep, who: DataKeyDep, messageId: str) -> JSONResponse:
        return JSONResponse(message_json(await gw.messages.abort(who.app_id, messageId)))

    @router.put(
        "/messages/{messageId}/redrive",
        tags=["messages"],
        summary="Deliver a FAILED message again (new generation)",
        responses={200: {"model": MessageOut}, **errors(401, 403, 404, 409, 503)},
    )
    async def redrive(gw: GatewayDep, who: DataKeyDep, messageId: str) -> JSONResponse:
        return JSONResponse(message_json(await gw.messages.redrive(who.app_id, messageId)))

    @router.put(
        "/messages/{messageId}/reschedule",
        tags=["messages"],
        summary="Move a READY or QUEUED message to a new sendAt, same id (new generation)",
        openapi_extra=json_body(RESCHEDULE_SCHEMA),
        responses={200: {"model": MessageOut}, **errors(400, 401, 403, 404, 409, 413, 415, 503)},
    )
    async def reschedule(
        request: Request, gw: GatewayDep, who: DataKeyDep, messageId: str
    ) -> JSONResponse:
        return await _reschedule(request, gw, who.app_id, messageId)

    for operation in BulkOperation:
        router.add_api_route(
            f"/messages/{operation}",
            _bulk_route(operation),
            methods=["POST"],
            tags=["messages"],
            summary=_BULK_SUMMARY[operation],
            operation_id=f"bulk_{operation}",
            openapi_extra=json_body(bulk_schema(operation)),
            responses={
                200: {"model": _BULK_RESULT[operation]},
                **errors(400, 401, 403, 413, 415),
            },
        )

    # -- the dashboard form: control key, app by path -------------------------------------------

    @router.get(
        "/applications/{appId}/messages",
        tags=["dashboard"],
        responses={200: {"model": MessageList}, **errors(400, 401, 403, 404)},
    )
    async def app_list_messages(
        gw: GatewayDep,
        who: ControlKeyDep,
        appId: str,
        status: Status_ = None,
        startFrom: StartFrom = None,
        limit: Limit = 50,
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _list(gw, app.app_id, status, startFrom, limit)

    @router.get(
        "/applications/{appId}/messages/{messageId}",
        tags=["dashboard"],
        responses={200: {"model": MessageOut}, **MESSAGE_ERRORS},
    )
    async def app_get_message(
        gw: GatewayDep, who: ControlKeyDep, appId: str, messageId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return JSONResponse(message_json(await gw.messages.get(app.app_id, messageId)))

    @router.get(
        "/applications/{appId}/messages/{messageId}/logs",
        tags=["dashboard"],
        responses={200: {"model": LogList}, **MESSAGE_ERRORS},
    )
    async def app_get_logs(
        gw: GatewayDep, who: ControlKeyDep, appId: str, messageId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _logs(gw, app.app_id, messageId)

    @router.put(
        "/applications/{appId}/messages/{messageId}/abort",
        tags=["dashboard"],
        responses={200: {"model": MessageOut}, **errors(401, 403, 404, 409, 503)},
    )
    async def app_abort(
        gw: GatewayDep, who: ControlKeyDep, appId: str, messageId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return JSONResponse(message_json(await gw.messages.abort(app.app_id, messageId)))

    @router.put(
        "/applications/{appId}/messages/{messageId}/redrive",
        tags=["dashboard"],
        responses={200: {"model": MessageOut}, **errors(401, 403, 404, 409, 503)},
    )
    async def app_redrive(
        gw: GatewayDep, who: ControlKeyDep, appId: str, messageId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return JSONResponse(message_json(await gw.messages.redrive(app.app_id, messageId)))

    @router.put(
        "/applications/{appId}/messages/{messageId}/reschedule",
        tags=["dashboard"],
        openapi_extra=json_body(RESCHEDULE_SCHEMA),
        responses={200: {"model": MessageOut}, **errors(400, 401, 403, 404, 409, 413, 415, 503)},
    )
    async def app_reschedule(
        request: Request, gw: GatewayDep, who: ControlKeyDep, appId: str, messageId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _reschedule(request, gw, app.app_id, messageId)

    for operation in BulkOperation:
        router.add_api_route(
            f"/applications/{{appId}}/messages/{operation}",
            _app_bulk_route(operation),
            methods=["POST"],
            tags=["dashboard"],
            operation_id=f"app_bulk_{operation}",
            openapi_extra=json_body(bulk_schema(operation)),
            responses={
                200: {"model": _BULK_RESULT[operation]},
                **errors(400, 401, 403, 404, 413, 415),
            },
        )

    return router


async def _list(
    gw: Gateway, app_id: str, status: str | None, start_from: str | None, limit: int
) -> JSONResponse:
    limit = min(limit, gw.settings.list_limit_max)
    views, cursor = await gw.messages.list(app_id, status, start_from, limit)
    return JSONResponse({"messages": [message_json(v) for v in views], "next": cursor})


async def _logs(gw: Gateway, app_id: str, message_id: str) -> JSONResponse:
    entries = await gw.messages.logs(app_id, message_id)
    return JSONResponse({"logs": [log_json(e) for e in entries]})


async def _reschedule(request: Request, gw: Gateway, app_id: str, message_id: str) -> JSONResponse:
    # The message first: an unknown one is 404 whatever the body says.
    await gw.messages.get(app_id, message_id)
    try:
        send_at_ms = parse_reschedule(loads(await request.body()))
    except ValidationError as exc:
        raise invalid(gw, exc) from None
    return JSONResponse(message_json(await gw.messages.reschedule(app_id, message_id, send_at_ms)))


_BULK_SUMMARY = {
    BulkOperation.ABORT: "Abort the READY / QUEUED messages of a filter, a slice per call",
    BulkOperation.REDRIVE: "Redrive the FAILED messages of a filter, a slice per call",
}
_BULK_RESULT: dict[BulkOperation, type[BaseModel]] = {
    BulkOperation.ABORT: BulkAbortResult,
    BulkOperation.REDRIVE: BulkRedriveResult,
}


async def _bulk(
    request: Request, gw: Gateway, app_id: str, operation: BulkOperation
) -> JSONResponse:
    body = await request.body()
    try:
        filtered = parse_bulk(operation, loads(body) if body.strip() else None)
    except ValidationError as exc:
        raise invalid(gw, exc) from None
    result = await BulkRunner(gw.messages).run(app_id, filtered)
    return JSONResponse(result.to_json())


def _bulk_route(operation: BulkOperation) -> Callable[..., Awaitable[JSONResponse]]:
    async def bulk(request: Request, gw: GatewayDep, who: DataKeyDep) -> JSONResponse:
        return await _bulk(request, gw, who.app_id, operation)

    return bulk


def _app_bulk_route(operation: BulkOperation) -> Callable[..., Awaitable[JSONResponse]]:
    async def app_bulk(
        request: Request, gw: GatewayDep, who: ControlKeyDep, appId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _bulk(request, gw, app.app_id, operation)

    return app_bulk
