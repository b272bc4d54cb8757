"""The web console at /console: applications, keys and messages in a browser.

Server-rendered HTML (Jinja2 templates, one hand-written stylesheet, one small script for the
copy button). It is its own ASGI app, reached through `ConsoleMount` in front of the gateway:
the gateway's middleware accepts only JSON bodies, while the console takes HTML form posts.
Pages call the gateway's ControlService and MessageService, the same code as the JSON routes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.clock import Clock
from scheduler_ingest.console import (
    routes_apps,
    routes_auth,
    routes_keys,
    routes_messages,
    routes_schedules,
)
from scheduler_ingest.console.metrics import ConsoleMetrics
from scheduler_ingest.console.sessions import SessionStore
from scheduler_ingest.console.web import (
    COOKIE,
    HERE,
    PREFIX,
    Console,
    Refused,
    SignInRequired,
    api_error_page,
    not_found_page,
)
from scheduler_ingest.errors import ApiError
from scheduler_ingest.gateway import Gateway
from scheduler_ingest.settings import IngestSettings

log = logging.getLogger("scheduler_ingest.console")


def build_console(
    gw: Gateway,
    settings: IngestSettings,
    clock: Clock,
    registry: CollectorRegistry,
    session_key: bytes,
) -> FastAPI:
    """`session_key` signs the session cookies: the same on every replica (derived from the
    shared pepper), so any replica accepts a session another one opened."""
    console = Console(
        gw=gw,
        settings=settings,
        sessions=SessionStore(
            clock,
            session_key,
            settings.console_session_ttl_ms,
            settings.console_session_max_age_ms,
        ),
        metrics=ConsoleMetrics(registry),
        templates=_templates(),
        clock=clock,
    )
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = console
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (routes_auth, routes_apps, routes_keys, routes_messages, routes_schedules):
        app.include_router(module.build_router())
    _install_handlers(app, console)

    @app.middleware("http")
    async def finish(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        console.finish(request, response)
        return response

    return app


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    return templates


def _install_handlers(app: FastAPI, console: Console) -> None:
    async def sign_in_required(request: Request, __: Exception) -> Response:
        response = console.redirect("/sign-in")
        if request.cookies.get(COOKIE):
            console.clear_cookie(response)  # forged, expired, or its key deactivated
        return response

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        console.metrics.refused_posts.labels(exc.reason).inc()
        return console.render(
            request,
            "error.html",
            {
                "title": "Refused",
                "message": "This form could not be accepted. Reload the page and try again.",
            },
            403,
            console.session_of(request),
        )

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return api_error_page(console, request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        session = console.session_of(request)
        if exc.status_code == 404:
            return not_found_page(console, request, session)
        return console.render(
            request,
            "error.html",
            {"title": f"Error {exc.status_code}", "message": str(exc.detail)},
            exc.status_code,
            session,
        )

    async def invalid(request: Request, _: Exception) -> Response:
        return console.render(
            request, "error.html", {"title": "Bad request", "message": "Invalid request."}, 400
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("console error on %s %s", request.method, request.url.path, exc_info=exc)
        return console.render(
            request,
            "error.html",
            {"title": "Something went wrong", "message": "The error has been logged; try again."},
            500,
        )

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


class ConsoleMount:
    """Routes /console and everything under it to the console app, the rest to the gateway
    (and its JSON-only middleware)."""

    def __init__(self, app: ASGIApp, *, console: ASGIApp) -> None:
        self._app = app
        self._console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route_path(scope) if scope["type"] == "http" else ""
        if path == PREFIX:
            await RedirectResponse(PREFIX + "/", status_code=307)(scope, receive, send)
            return
        if path.startswith(PREFIX + "/"):
            inner = dict(scope, root_path=scope.get("root_path", "") + PREFIX)
            await self._console(inner, receive, send)
            return
        await self._app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path below the server's root path (ASGI paths include it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path
