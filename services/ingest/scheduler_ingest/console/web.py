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
NOTICE_COOKIE = "scheduler_console_notice"
NOTICE_MAX_AGE_S = 300
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

    def session_of(self, request: Request) -> Session | None:
        """The session of the request's cookie (None: none, forged or expired), read once per
        request, with the notices the previous request left for it."""
        try:
            found: Session | None = request.state.console_session
        except AttributeError:
            found = self.sessions.get(request.cookies.get(COOKIE))
            if found is not None:
                found.carried = self.sessions.notices_of(found, request.cookies.get(NOTICE_COOKIE))
            request.state.console_session = found
        return found

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.sessions.cookie(session),
            max_age=self.settings.console_session_ttl_ms // 1000,
            path=PREFIX,
            secure=self.settings.console_cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response, name: str = COOKIE) -> None:
        response.delete_cookie(
            name,
            path=PREFIX,
            secure=self.settings.console_cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def finish(self, request: Request, response: Response) -> None:
        """After each console response: carry this request's notices to the next page, drop
        the ones shown, and re-sign a used session's cookie (its idle expiry moves on)."""
        try:
            session: Session | None = request.state.console_session
        except AttributeError:
            return
        if session is None:
            if request.cookies.get(NOTICE_COOKIE):
                self.clear_cookie(response, NOTICE_COOKIE)
            return
        if session.ended:
            self.clear_cookie(response, NOTICE_COOKIE)
            return
        if self.sessions.needs_refresh(session):
            self.set_cookie(response, session)
        if session.notices:
            response.set_cookie(
                NOTICE_COOKIE,
                self.sessions.notice_cookie(session),
                max_age=NOTICE_MAX_AGE_S,
                path=PREFIX,
                secure=self.settings.console_cookie_secure,
                httponly=True,
                samesite="strict",
            )
        elif session.carried_shown:
            self.clear_cookie(response, NOTICE_COOKIE)

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
    session = c.session_of(request)
    if session is None:
        raise SignInRequired()
    keys = await c.gw.control.list_control_keys(session.principal)
    if not any(k.id == session.principal.key_id and k.active for k in keys):
        session.ended = True
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
    session = c.session_of(request)
    if exc.status == 404:
        return not_found_page(c, request, session)
    return c.render(
        request,
        "error.html",
        {"title": f"Error {exc.status}", "message": exc.message},
        exc.status,
        session,
    )


def confirmed(post: Posted) -> bool:
    """An irreversible action's form says it was confirmed (the inline confirm of the page's
    script, or the confirmation page below when scripts are off)."""
    return post.text("confirmed") == "yes"


def confirm_page(
    c: Console,
    request: Request,
    post: Posted,
    *,
    title: str,
    consequence: str,
    action: str,
    button: str,
    back: str,
    fields: Mapping[str, str] | None = None,
) -> Response:
    """The confirmation step of an irreversible action posted without `confirmed=yes`: the same
    form again, confirmed, and a way back. Nothing has changed yet."""
    return c.render(
        request,
        "confirm.html",
        {
            "title": title,
            "consequence": consequence,
            "action": action,
            "button": button,
            "back": back,
            "fields": dict(fields or {}),
        },
        session=post.session,
    )
