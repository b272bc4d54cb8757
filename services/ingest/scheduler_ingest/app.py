"""`create_app(settings, deps)`: the ingest gateway as a FastAPI app, every dependency injected.

main() wires the real adapters (Cassandra stores, the Kafka publisher, the system clock); tests
call the same factory with fakes and a ManualClock, or with the real local stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from scheduler.clock import Clock
from scheduler.domain.idempotency import claim_ttl_ms
from scheduler.security import SecretHasher
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.apps import AppStore
from scheduler.store.ports import MessageStore, ScheduleStore
from scheduler.store.usage import UsageStore
from scheduler.topics import Topics
from scheduler_ingest import routes_control, routes_messages, routes_schedules
from scheduler_ingest.auth import Authenticator
from scheduler_ingest.console import ConsoleMount, build_console
from scheduler_ingest.control import ControlService
from scheduler_ingest.destinations import TopicDirectory
from scheduler_ingest.errors import install_error_handlers
from scheduler_ingest.gateway import Gateway
from scheduler_ingest.io import BlockingIo
from scheduler_ingest.limits import DailyQuota, RateLimiter
from scheduler_ingest.messages import MessageService
from scheduler_ingest.metrics import IngestMetrics
from scheduler_ingest.middleware import GatewayMiddleware
from scheduler_ingest.outcomes import NoResultLookup, ResultLookup
from scheduler_ingest.pending import PendingCap
from scheduler_ingest.publisher import Publisher
from scheduler_ingest.schedules import ScheduleService
from scheduler_ingest.settings import IngestSettings
from scheduler_ingest.usage import UsageCounter

if TYPE_CHECKING:  # the registry client pulls in an OAuth stack (~0.3 s of imports)
    from confluent_kafka.schema_registry import SchemaRegistryClient

READY_TIMEOUT_S = 2.0
# Swagger UI and ReDoc are served from the files of the `fastapi-offline` package, not a CDN:
# /docs works without internet access.
DOCS_ASSETS_URL = "/docs-assets"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"


@dataclass
class Deps:
    messages: MessageStore
    schedules: ScheduleStore
    apps: AppStore
    usage: UsageStore
    publisher: Publisher
    destinations: TopicDirectory  # KAFKA apps' topics are checked at creation and update
    clock: Clock
    registry: CollectorRegistry
    hasher: SecretHasher
    kafka: KafkaSettings
    scheduling: SchedulingSettings
    # Blocking readiness checks besides Kafka (e.g. "cassandra": a trivial query).
    probes: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    metrics: IngestMetrics | None = None  # built on `registry` when not given
    schema_registry: SchemaRegistryClient | None = None  # Confluent wire format when set
    io_threads: int = 32
    # Where an uncertain abort reads the dispatcher's result (outcomes.py). None: nowhere, so
    # such an abort is answered 409 too_late "could not be confirmed".
    results: ResultLookup | None = None


def create_app(settings: IngestSettings, deps: Deps) -> FastAPI:
    metrics = deps.metrics or IngestMetrics(deps.registry)
    io = BlockingIo(deps.io_threads)
    auth = Authenticator(
        deps.apps,
        deps.hasher,
        deps.clock,
        settings.key_cache_ttl_ms,
        settings.key_cache_max,
        metrics,
    )
    topics = Topics(deps.kafka, deps.scheduling)
    results = deps.results or NoResultLookup()

    async def read_pending(app_id: str) -> int:
        return await io(deps.usage.pending, app_id)

    pending = PendingCap(
        read=read_pending,
        unflushed=lambda app_id: usage.unflushed(app_id),
        clock=deps.clock,
        limit=settings.max_pending_per_app or None,
        refresh_ms=settings.pending_refresh_ms,
    )
    usage = UsageCounter(deps.usage, io, settings.usage_flush_ms, on_written=pending.adjust)
    messages = MessageService(
        store=deps.messages,
        usage=usage,
        publisher=deps.publisher,
        clock=deps.clock,
        scheduling=deps.scheduling,
        topics=topics,
        metrics=metrics,
        io=io,
        retry_after_s=settings.retry_after_s,
        pending=pending,
        registry=deps.schema_registry,
        results=results,
        abort_outcome_wait_ms=settings.abort_outcome_wait_ms,
        key_ttl_ms=claim_ttl_ms(deps.kafka.requests_retention_ms),
    )
    gw = Gateway(
        settings=settings,
        auth=auth,
        messages=messages,
        schedules=ScheduleService(
            store=deps.schedules,
            messages=messages,
            clock=deps.clock,
            scheduling=deps.scheduling,
            io=io,
        ),
        control=ControlService(
            store=deps.apps,
            usage=deps.usage,
            hasher=deps.hasher,
            auth=auth,
            clock=deps.clock,
            kafka=deps.kafka,
            settings=settings,
            io=io,
            destinations=deps.destinations,
        ),
        rate=RateLimiter(deps.clock, settings.rate_per_s, settings.rate_burst),
        quota=DailyQuota(deps.clock, settings.daily_quota),
        pending=pending,
        metrics=metrics,
        probes={
            "kafka": lambda: deps.publisher.ready(READY_TIMEOUT_S),
            **deps.probes,
        },
    )
    app = FastAPI(
        title="Point-in-time scheduler: ingest gateway",
        version="1.0",
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw
    install_error_handlers(app)
    app.include_router(routes_messages.build_router(settings.batch_limit))
    app.include_router(routes_schedules.build_router())
    app.include_router(routes_control.build_router())
    _ops_routes(app, gw)
    _docs_routes(app)
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        clock=deps.clock,
    )
    if settings.console_enabled:
        # Outermost: the console takes HTML form posts, which the gateway middleware refuses.
        console = build_console(
            gw, settings, deps.clock, deps.registry, deps.hasher.derive("console-session")
        )
        app.add_middleware(ConsoleMount, console=console)
    app.router.add_event_handler("startup", usage.start)
    app.router.add_event_handler("shutdown", usage.stop)
    app.router.add_event_handler("shutdown", io.close)
    app.router.add_event_handler("shutdown", results.close)
    return app


API_DESCRIPTION = """Schedule a payload for delivery at a point in time; control plane.

Data key routes (`/messages...`, `/schedules...`):
`Authorization: Basic base64(<appId>:<secret>)`.
Control key routes (`/applications...`, `/control-keys...`): `Authorization: Token <secret>`.
Every error is `{"error": "<token>", "message": "<text>"}`; invalid input is answered 400 (never
422). Deliveries to REST endpoints are signed: verify `X-Scheduler-Signature` with the
application's whole `whsec_...` signing secret as the HMAC-SHA256 key (docs/WEBHOOKS.md in the
repository). The full reference with examples is docs/API.md in the repository."""


def _openapi_400_not_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI lists a 422 for every route with a body or parameters, but the API answers bad
    input with 400 and the JSON error body (errors.py): drop the 422s and their schemas, and
    declare 400 where a route did not already."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
        )
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": "Bad Request",
                        "content": {"application/json": {"schema": error_ref}},
                    }
        schemas = spec.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    return openapi


def _docs_routes(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from local static files; the OpenAPI without 422s."""
    app.openapi = _openapi_400_not_422(app)  # type: ignore[method-assign]
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title}: API docs",
            oauth2_redirect_url=f"{root}{oauth2_redirect}",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title}: API reference",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def _ops_routes(app: FastAPI, gw: Gateway) -> None:
    """Probes only: /metrics is served on the metrics port (main.serve_metrics)."""

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Ready when Kafka and Cassandra answer",
        responses={503: {"description": "a dependency does not answer"}},
    )
    async def readyz() -> JSONResponse:
        names = list(gw.probes)
        results = await asyncio.gather(
            *(asyncio.to_thread(_safe, gw.probes[name]) for name in names)
        )
        checks = {name: "ok" if ok else "down" for name, ok in zip(names, results, strict=True)}
        ready = all(results)
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            200 if ready else 503,
        )


def _safe(probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001 - a failing probe means "not ready"
        return False
