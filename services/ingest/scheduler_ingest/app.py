"""`create_app(settings, deps)`: the ingest gateway as a FastAPI app, every dependency injected.

main() wires the real adapters (Cassandra stores, the Kafka publisher, the system clock); tests
call the same factory with fakes and a ManualClock, or with the real local stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka.schema_registry import SchemaRegistryClient
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.clock import Clock
from scheduler.domain.idempotency import claim_ttl_ms
from scheduler.security import SecretHasher
from scheduler.settings import KafkaSettings, SchedulingSettings
from scheduler.store.apps import AppStore
from scheduler.store.ports import MessageStore
from scheduler.store.usage import UsageStore
from scheduler.topics import Topics
from scheduler_ingest import routes_control, routes_messages
from scheduler_ingest.auth import Authenticator
from scheduler_ingest.console import ConsoleMount, build_console
from scheduler_ingest.control import ControlService
from scheduler_ingest.errors import install_error_handlers
from scheduler_ingest.gateway import Gateway
from scheduler_ingest.io import BlockingIo
from scheduler_ingest.limits import DailyQuota, RateLimiter
from scheduler_ingest.messages import MessageService
from scheduler_ingest.metrics import IngestMetrics
from scheduler_ingest.middleware import GatewayMiddleware
from scheduler_ingest.pending import PendingCap
from scheduler_ingest.publisher import Publisher
from scheduler_ingest.settings import IngestSettings
from scheduler_ingest.usage import UsageCounter

READY_TIMEOUT_S = 2.0


@dataclass
class Deps:
    messages: MessageStore
    apps: AppStore
    usage: UsageStore
    publisher: Publisher
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
    gw = Gateway(
        settings=settings,
        auth=auth,
        messages=MessageService(
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
            key_ttl_ms=claim_ttl_ms(deps.kafka.requests_retention_ms),
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
        description="Schedule a payload for delivery at a point in time; control plane.",
    )
    app.state.gateway = gw
    install_error_handlers(app)
    app.include_router(routes_messages.build_router(settings.batch_limit))
    app.include_router(routes_control.build_router())
    _ops_routes(app, gw, deps.registry)
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        clock=deps.clock,
    )
    if settings.console_enabled:
        # Outermost: the console takes HTML form posts, which the gateway middleware refuses.
        console = build_console(gw, settings, deps.clock, deps.registry)
        app.add_middleware(ConsoleMount, console=console)
    app.router.add_event_handler("startup", usage.start)
    app.router.add_event_handler("shutdown", usage.stop)
    app.router.add_event_handler("shutdown", io.close)
    return app


def _ops_routes(app: FastAPI, gw: Gateway, registry: CollectorRegistry) -> None:
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

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _safe(probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001 - a failing probe means "not ready"
        return False
