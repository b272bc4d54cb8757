"""Recurring schedule routes: `/schedules...` with a data key, `/applications/{appId}/schedules...`
with a control key (the dashboard form). Both reach the same ScheduleService, scoped to one app."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scheduler.domain.errors import ValidationError
from scheduler.store.ports import Schedule
from scheduler_ingest.bodies import json_body, loads
from scheduler_ingest.gateway import ControlKeyDep, DataKeyDep, Gateway, GatewayDep, errors, invalid
from scheduler_ingest.models import Deleted, ScheduleList, ScheduleOut
from scheduler_ingest.routes_messages import Limit, StartFrom

_INSTANT = {
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": 100000000000},
    ],
}
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["expression", "payload"],
    "additionalProperties": False,
    "properties": {
        "expression": {
            "type": "string",
            "description": "5-field cron (`0 9 * * MON-FRI`), a macro (`@daily`) or a rate"
            " (`rate(15 minutes)`)",
        },
        "timezone": {"type": "string", "description": "IANA name; default UTC"},
        "start": {
            **_INSTANT,
            "description": "RFC 3339 with an offset or epoch ms, inclusive; default: the creation"
            " instant (an update without it keeps the current start)",
        },
        "end": {**_INSTANT, "description": "inclusive; default: none"},
        "maxOccurrences": {"type": "integer", "minimum": 1, "maximum": 1000},
        "catchUp": {"type": "string", "enum": ["latest", "skip", "all"]},
        "catchUpLimit": {"type": "integer", "minimum": 1, "maximum": 1000},
        "payload": {"description": "each occurrence's payload: any JSON value except null"},
        "kafkaKey": {"type": "string", "minLength": 1, "maxLength": 256},
    },
}
CREATE_SCHEMA: dict[str, Any] = {
    **UPDATE_SCHEMA,
    "properties": {
        **UPDATE_SCHEMA["properties"],
        "paused": {"type": "boolean", "description": "create it paused; default false"},
    },
}
READ_ERRORS = errors(401, 403, 404)
WRITE_ERRORS = errors(400, 401, 403, 404, 413, 415)
# 503: an abort (pause, delete) or redrive (resume) command was not acknowledged
STOP_ERRORS = errors(401, 403, 404, 503)
ONE: dict[int | str, dict[str, Any]] = {200: {"model": ScheduleOut}}


def build_router() -> APIRouter:
    router = APIRouter()

    # -- data plane -----------------------------------------------------------------------------

    @router.post(
        "/schedules",
        tags=["schedules"],
        summary="Create a recurring schedule: each occurrence becomes a message",
        openapi_extra=json_body(CREATE_SCHEMA),
        responses={**ONE, **errors(400, 401, 403, 413, 415)},
    )
    async def create(request: Request, gw: GatewayDep, who: DataKeyDep) -> JSONResponse:
        return await _create(gw, who.app_id, request)

    @router.get(
        "/schedules",
        tags=["schedules"],
        summary="The app's schedules, by id",
        responses={200: {"model": ScheduleList}, **errors(400, 401, 403)},
    )
    async def list_schedules(
        gw: GatewayDep, who: DataKeyDep, startFrom: StartFrom = None, limit: Limit = 50
    ) -> JSONResponse:
        return await _list(gw, who.app_id, startFrom, limit)

    @router.get("/schedules/{scheduleId}", tags=["schedules"], responses={**ONE, **READ_ERRORS})
    async def get(gw: GatewayDep, who: DataKeyDep, scheduleId: str) -> JSONResponse:
        return _one(gw, await gw.schedules.get(who.app_id, scheduleId))

    @router.put(
        "/schedules/{scheduleId}",
        tags=["schedules"],
        summary="Replace a schedule's timing, payload and kafkaKey (not its paused flag)",
        openapi_extra=json_body(UPDATE_SCHEMA),
        responses={**ONE, **WRITE_ERRORS},
    )
    async def update(
        request: Request, gw: GatewayDep, who: DataKeyDep, scheduleId: str
    ) -> JSONResponse:
        return await _update(gw, who.app_id, scheduleId, request)

    @router.put(
        "/schedules/{scheduleId}/pause",
        tags=["schedules"],
        summary="Pause; occurrences created ahead are aborted (not those within the guard)",
        responses={**ONE, **STOP_ERRORS},
    )
    async def pause(gw: GatewayDep, who: DataKeyDep, scheduleId: str) -> JSONResponse:
        return _one(gw, await gw.schedules.pause(who.app_id, scheduleId))

    @router.put(
        "/schedules/{scheduleId}/resume",
        tags=["schedules"],
        summary="Resume; the occurrences the pause aborted come back (catch-up policy for the due)",
        responses={**ONE, **STOP_ERRORS},
    )
    async def resume(gw: GatewayDep, who: DataKeyDep, scheduleId: str) -> JSONResponse:
        return _one(gw, await gw.schedules.resume(who.app_id, scheduleId))

    @router.delete(
        "/schedules/{scheduleId}",
        tags=["schedules"],
        summary="Delete; occurrences created ahead are aborted (not those within the guard)",
        responses={200: {"model": Deleted}, **STOP_ERRORS},
    )
    async def delete(gw: GatewayDep, who: DataKeyDep, scheduleId: str) -> JSONResponse:
        return await _delete(gw, who.app_id, scheduleId)

    # -- the dashboard form: control key, app by path -------------------------------------------

    @router.post(
        "/applications/{appId}/schedules",
        tags=["dashboard"],
        openapi_extra=json_body(CREATE_SCHEMA),
        responses={**ONE, **errors(400, 401, 403, 404, 413, 415)},
    )
    async def app_create(
        request: Request, gw: GatewayDep, who: ControlKeyDep, appId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _create(gw, app.app_id, request)

    @router.get(
        "/applications/{appId}/schedules",
        tags=["dashboard"],
        responses={200: {"model": ScheduleList}, **errors(400, 401, 403, 404)},
    )
    async def app_list(
        gw: GatewayDep,
        who: ControlKeyDep,
        appId: str,
        startFrom: StartFrom = None,
        limit: Limit = 50,
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _list(gw, app.app_id, startFrom, limit)

    @router.get(
        "/applications/{appId}/schedules/{scheduleId}",
        tags=["dashboard"],
        responses={**ONE, **READ_ERRORS},
    )
    async def app_get(
        gw: GatewayDep, who: ControlKeyDep, appId: str, scheduleId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return _one(gw, await gw.schedules.get(app.app_id, scheduleId))

    @router.put(
        "/applications/{appId}/schedules/{scheduleId}",
        tags=["dashboard"],
        openapi_extra=json_body(UPDATE_SCHEMA),
        responses={**ONE, **WRITE_ERRORS},
    )
    async def app_update(
        request: Request, gw: GatewayDep, who: ControlKeyDep, appId: str, scheduleId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _update(gw, app.app_id, scheduleId, request)

    @router.put(
        "/applications/{appId}/schedules/{scheduleId}/pause",
        tags=["dashboard"],
        responses={**ONE, **STOP_ERRORS},
    )
    async def app_pause(
        gw: GatewayDep, who: ControlKeyDep, appId: str, scheduleId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return _one(gw, await gw.schedules.pause(app.app_id, scheduleId))

    @router.put(
        "/applications/{appId}/schedules/{scheduleId}/resume",
        tags=["dashboard"],
        responses={**ONE, **STOP_ERRORS},
    )
    async def app_resume(
        gw: GatewayDep, who: ControlKeyDep, appId: str, scheduleId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return _one(gw, await gw.schedules.resume(app.app_id, scheduleId))

    @router.delete(
        "/applications/{appId}/schedules/{scheduleId}",
        tags=["dashboard"],
        responses={200: {"model": Deleted}, **STOP_ERRORS},
    )
    async def app_delete(
        gw: GatewayDep, who: ControlKeyDep, appId: str, scheduleId: str
    ) -> JSONResponse:
        app = await gw.control.owned_app(who, appId)
        return await _delete(gw, app.app_id, scheduleId)

    return router


def _one(gw: Gateway, schedule: Schedule) -> JSONResponse:
    return JSONResponse(gw.schedules.render(schedule))


async def _create(gw: Gateway, app_id: str, request: Request) -> JSONResponse:
    try:
        schedule = await gw.schedules.create(app_id, loads(await request.body()))
    except ValidationError as exc:
        raise invalid(gw, exc) from None
    return _one(gw, schedule)


async def _update(gw: Gateway, app_id: str, schedule_id: str, request: Request) -> JSONResponse:
    try:
        schedule = await gw.schedules.update(app_id, schedule_id, loads(await request.body()))
    except ValidationError as exc:
        raise invalid(gw, exc) from None
    return _one(gw, schedule)


async def _list(gw: Gateway, app_id: str, start_from: str | None, limit: int) -> JSONResponse:
    limit = min(limit, gw.settings.list_limit_max)
    items, cursor = await gw.schedules.list(app_id, start_from, limit)
    return JSONResponse({"schedules": [gw.schedules.render(s) for s in items], "next": cursor})


async def _delete(gw: Gateway, app_id: str, schedule_id: str) -> JSONResponse:
    await gw.schedules.delete(app_id, schedule_id)
    return JSONResponse({"id": schedule_id, "deleted": True})
