"""What the console's pages share: templates, sessions, the signed-in owner, CSRF and origin
checks, and rendering. Business logic is not here: pages call the gateway's services (the same
ControlService and MessageService the JSON routes call)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from scheduler.clock import Clock
from scheduler_ingest.console.metrics import ConsoleMetrics
from scheduler_ingest.console.sessions import Session, SessionStore
from scheduler_ingest.errors import ApiError
from scheduler_ingest.gateway import Gateway
from scheduler_ingest.settings import IngestSettings

PREFIX = "/console"
COOKIE = "scheduler_console"
HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024

# Pages are rendered on the server: scripts only from ourselves (the copy button), no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send `Origin: null` on our own posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No live session: the page redirects to the sign-in form."""


class Refused(Exception):
    """A form post refused before any change (bad CSRF token or foreign origin): 403."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Console:
    gw: Gateway
    settings: IngestSettings
    sessions: SessionStore
    metrics: ConsoleMetrics
    templates: Jinja2Templates
    clock: Clock

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        status: int = 200,
        session: Session | None = None,
    ) -> Response:
        values: dict[str, Any] = {
            "session": session,
            "notices": session.take_notices() if session is not None else [],
            "prefix": PREFIX,
            **(context or {}),
        }
        response = self.templates.TemplateResponse(request, template, values, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def redirect(self, path: str) -> Response:
        response = RedirectResponse(PREFIX + path, status_code=303)
        response.headers.update(SECURITY_HEADERS)
        return response

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            session.session_id,
            max_age=self.settings.console_session_ttl_ms // 1000,
            path=PREFIX,
            secure=self.settings.console_cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE,
            path=PREFIX,
            secure=self.settings.console_cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def check_origin(self, request: Request) -> None:
        """A browser sends Origin with every POST; a foreign one is a cross-site request."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise Refused("origin")

    async def read_form(self, request: Request) -> FormData:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
            raise Refused("too_large")
        return await request.form(max_files=0, max_fields=64)


def console(request: Request) -> Console:
    found = request.app.state.console
    assert isinstance(found, Console)
    return found


ConsoleDep = Annotated[Console, Depends(console)]


async def signed_in(request: Request, c: ConsoleDep) -> Session:
    """The live session of the cookie whose control key is still active, or SignInRequired."""
    session = c.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired()
    keys = await c.gw.control.list_control_keys(session.principal)
    if not any(k.id == session.principal.key_id and k.active for k in keys):
        c.sessions.close(session.session_id)
        raise SignInRequired()
    return session


SessionDep = Annotated[Session, Depends(signed_in)]


@dataclass
class Posted:
    session: Session
    form: FormData

    def text(self, name: str) -> str:
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else ""


async def posted(request: Request, c: ConsoleDep, session: SessionDep) -> Posted:
    """A state-changing form post: same origin, signed in, and carrying the session's CSRF token."""
    c.check_origin(request)
    form = await c.read_form(request)
    token = form.get("csrf")
    if not session.csrf_ok(token if isinstance(token, str) else None):
        raise Refused("csrf")
    return Posted(session, form)


PostDep = Annotated[Posted, Depends(posted)]


def not_found_page(c: Console, request: Request, session: Session | None) -> Response:
    return c.render(
        request, "error.html", {"title": "Not found", "message": "No such page."}, 404, session
    )


def api_error_page(c: Console, request: Request, exc: ApiError) -> Response:
    session = c.sessions.get(request.cookies.get(COOKIE))
    if exc.status == 404:
        return not_found_page(c, request, session)
    return c.render(
        request,
        "error.html",
        {"title": f"Error {exc.status}", "message": exc.message},
        exc.status,
        session,
    )
