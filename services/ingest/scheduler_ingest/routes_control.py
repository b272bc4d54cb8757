"""Control-plane routes (control key): applications, data keys, control keys, usage."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.store.usage import DAY_MS
from scheduler_ingest.control import app_view
from scheduler_ingest.gateway import ControlKeyDep, GatewayDep, errors
from scheduler_ingest.models import (
    AppCreated,
    ApplicationCreate,
    ApplicationUpdate,
    AppSaved,
    AppView,
    Deactivated,
    Deleted,
    KeyCreated,
    KeyView,
    RotatedSecret,
    UsageDayOut,
    UsageOut,
)

APP_ERRORS = errors(400, 401, 403, 404)
_EPOCH = date(1970, 1, 1)


def _day(value: date | None) -> int | None:
    return None if value is None else (value - _EPOCH).days


def build_router() -> APIRouter:
    router = APIRouter(tags=["control"])

    # 400 unknown_topic: a KAFKA app's topic does not exist; 503: Kafka did not answer the check
    @router.post(
        "/applications", responses=errors(400, 401, 403, 415, 503), response_model=AppCreated
    )
    async def create_application(
        gw: GatewayDep, who: ControlKeyDep, body: ApplicationCreate
    ) -> AppCreated:
        return await gw.control.create_app(who, body)

    @router.get("/applications", responses=errors(401, 403), response_model=list[AppView])
    async def list_applications(gw: GatewayDep, who: ControlKeyDep) -> list[AppView]:
        return await gw.control.list_apps(who)

    @router.get("/applications/{appId}", responses=APP_ERRORS, response_model=AppView)
    async def get_application(gw: GatewayDep, who: ControlKeyDep, appId: str) -> AppView:
        return app_view(await gw.control.owned_app(who, appId))

    @router.put(
        "/applications/{appId}", responses=errors(400, 401, 403, 404, 503), response_model=AppSaved
    )
    async def update_application(
        gw: GatewayDep, who: ControlKeyDep, appId: str, body: ApplicationUpdate
    ) -> AppSaved:
        return await gw.control.update_app(who, appId, body)

    @router.put(
        "/applications/{appId}/pause",
        responses=APP_ERRORS,
        response_model=AppView,
        summary="Pause the app's deliveries: due messages wait, they are not failed",
    )
    async def pause_deliveries(gw: GatewayDep, who: ControlKeyDep, appId: str) -> AppView:
        return app_view(await gw.control.set_deliveries_paused(who, appId, True))

    @router.put(
        "/applications/{appId}/resume",
        responses=APP_ERRORS,
        response_model=AppView,
        summary="Resume the app's deliveries: what waited is delivered (at its rate limit)",
    )
    async def resume_deliveries(gw: GatewayDep, who: ControlKeyDep, appId: str) -> AppView:
        return app_view(await gw.control.set_deliveries_paused(who, appId, False))

    @router.delete("/applications/{appId}", responses=APP_ERRORS, response_model=Deleted)
    async def delete_application(gw: GatewayDep, who: ControlKeyDep, appId: str) -> Deleted:
        await gw.control.delete_app(who, appId)
        return Deleted(id=appId, deleted=True)

    @router.post(
        "/applications/{appId}/signing-secret/rotate",
        responses=APP_ERRORS,
        response_model=RotatedSecret,
    )
    async def rotate_signing_secret(
        gw: GatewayDep, who: ControlKeyDep, appId: str
    ) -> RotatedSecret:
        return RotatedSecret.model_validate(await gw.control.rotate_signing_secret(who, appId))

    @router.get("/applications/{appId}/usage", responses=APP_ERRORS, response_model=UsageOut)
    async def usage(
        gw: GatewayDep,
        who: ControlKeyDep,
        appId: str,
        from_: Annotated[date | None, Query(alias="from", description="first UTC day")] = None,
        to: Annotated[date | None, Query(description="last UTC day (default today)")] = None,
    ) -> UsageOut:
        days = await gw.control.usage(who, appId, _day(from_), _day(to))
        return UsageOut(
            appId=appId,
            approximate=True,
            days=[
                UsageDayOut(
                    date=format_rfc3339_ms(d.day * DAY_MS)[:10],
                    ingested=d.ingested,
                    sent=d.sent,
                    failed=d.failed,
                )
                for d in days
            ],
        )

    @router.post("/applications/{appId}/data-keys", responses=APP_ERRORS, response_model=KeyCreated)
    async def create_data_key(gw: GatewayDep, who: ControlKeyDep, appId: str) -> KeyCreated:
        return await gw.control.create_data_key(who, appId)

    @router.get(
        "/applications/{appId}/data-keys", responses=APP_ERRORS, response_model=list[KeyView]
    )
    async def list_data_keys(gw: GatewayDep, who: ControlKeyDep, appId: str) -> list[KeyView]:
        return await gw.control.list_data_keys(who, appId)

    @router.put(
        "/applications/{appId}/data-keys/{dataKeyId}/deactivate",
        responses=APP_ERRORS,
        response_model=Deactivated,
    )
    async def deactivate_data_key(
        gw: GatewayDep, who: ControlKeyDep, appId: str, dataKeyId: str
    ) -> Deactivated:
        await gw.control.deactivate_data_key(who, appId, dataKeyId)
        return Deactivated(id=dataKeyId, active=False)

    @router.post("/control-keys", responses=errors(401, 403), response_model=KeyCreated)
    async def create_control_key(gw: GatewayDep, who: ControlKeyDep) -> KeyCreated:
        return await gw.control.create_control_key(who)

    @router.get("/control-keys", responses=errors(401, 403), response_model=list[KeyView])
    async def list_control_keys(gw: GatewayDep, who: ControlKeyDep) -> list[KeyView]:
        return await gw.control.list_control_keys(who)

    # 409 last_control_key: the owner's last active control key is never deactivated
    @router.put(
        "/control-keys/{controlKeyId}/deactivate",
        responses=errors(401, 403, 404, 409),
        response_model=Deactivated,
    )
    async def deactivate_control_key(
        gw: GatewayDep, who: ControlKeyDep, controlKeyId: str
    ) -> Deactivated:
        await gw.control.deactivate_control_key(who, controlKeyId)
        return Deactivated(id=controlKeyId, active=False)

    return router
