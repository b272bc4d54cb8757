"""What the routes share: the services, the authenticator, the limits and the auth schemes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from scheduler.domain.errors import ValidationError
from scheduler_ingest.auth import Authenticator, ControlPrincipal, DataPrincipal
from scheduler_ingest.control import ControlService
from scheduler_ingest.errors import ApiError
from scheduler_ingest.limits import DailyQuota, RateLimiter
from scheduler_ingest.messages import MessageService
from scheduler_ingest.metrics import IngestMetrics
from scheduler_ingest.models import ErrorBody
from scheduler_ingest.pending import PendingCap
from scheduler_ingest.schedules import ScheduleService
from scheduler_ingest.settings import IngestSettings

# Documentation of the two schemes (both travel in the Authorization header; parsing is ours).
DATA_KEY = APIKeyHeader(
    name="Authorization",
    scheme_name="DataKey",
    description="Data key of one application: `Basic base64(<appId>:<secret>)`",
    auto_error=False,
)
CONTROL_KEY = APIKeyHeader(
    name="Authorization",
    scheme_name="ControlKey",
    description="Control key of an owner: `Token <secret>`",
    auto_error=False,
)


@dataclass
class Gateway:
    settings: IngestSettings
    auth: Authenticator
    messages: MessageService
    schedules: ScheduleService
    control: ControlService
    rate: RateLimiter
    quota: DailyQuota
    pending: PendingCap
    metrics: IngestMetrics
    probes: Mapping[str, Callable[[], bool]]


def gateway(request: Request) -> Gateway:
    gw = request.app.state.gateway
    assert isinstance(gw, Gateway)
    return gw


async def _gateway_dep(request: Request) -> Gateway:
    """Async on purpose: FastAPI runs a sync dependency in its thread pool, a thread hop per
    request for what is an attribute read."""
    return gateway(request)


async def data_principal(
    request: Request, _: Annotated[str | None, Security(DATA_KEY)] = None
) -> DataPrincipal:
    gw = gateway(request)
    try:
        return await gw.auth.data(request.headers.get("authorization"))
    except ApiError as exc:
        gw.metrics.rejects.labels(exc.token).inc()
        raise


async def control_principal(
    request: Request, _: Annotated[str | None, Security(CONTROL_KEY)] = None
) -> ControlPrincipal:
    gw = gateway(request)
    try:
        return await gw.auth.control(request.headers.get("authorization"))
    except ApiError as exc:
        gw.metrics.rejects.labels(exc.token).inc()
        raise


GatewayDep = Annotated[Gateway, Depends(_gateway_dep)]
DataKeyDep = Annotated[DataPrincipal, Depends(data_principal)]
ControlKeyDep = Annotated[ControlPrincipal, Depends(control_principal)]


def invalid(gw: Gateway, exc: ValidationError) -> ApiError:
    gw.metrics.rejects.labels(exc.token).inc()
    return ApiError.invalid(exc)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the JSON error body."""
    return {status: {"model": ErrorBody} for status in statuses}
