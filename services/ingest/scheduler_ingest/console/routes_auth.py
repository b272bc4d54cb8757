"""Sign-in with a control key, sign-out. The key is checked by the gateway's Authenticator (the
same lookup as `Authorization: Token <key>`), then forgotten: only the session id goes out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from scheduler_ingest.auth import MAX_HEADER_CHARS
from scheduler_ingest.console.web import ConsoleDep, PostDep
from scheduler_ingest.errors import ApiError

# Why a session ended, for the sign-in page it lands on (`?ended=`): fixed texts only.
ENDED = {
    "key": "You were signed out: the control key of that session was deactivated. Sign in"
    " with another active control key.",
}


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/")
    async def home(request: Request, c: ConsoleDep) -> Response:
        signed_in = c.session_of(request) is not None
        return c.redirect("/apps" if signed_in else "/sign-in")

    @router.get("/sign-in")
    async def sign_in_form(
        request: Request, c: ConsoleDep, ended: Annotated[str, Query(max_length=16)] = ""
    ) -> Response:
        return c.render(request, "sign_in.html", {"title": "Sign in", "ended": ENDED.get(ended)})

    @router.post("/sign-in")
    async def sign_in(request: Request, c: ConsoleDep) -> Response:
        c.check_origin(request)
        form = await c.read_form(request)
        key = form.get("key")
        key = key.strip() if isinstance(key, str) else ""
        try:
            if not key or len(key) > MAX_HEADER_CHARS:
                raise ApiError(401, "unauthorized", "missing key")
            principal = await c.gw.auth.control(f"Token {key}")
        except ApiError:
            c.metrics.sign_ins.labels("refused").inc()
            return c.render(
                request,
                "sign_in.html",
                {"title": "Sign in", "error": "This control key was refused."},
                401,
            )
        session = c.sessions.open(principal)  # a new session id each time (no fixation)
        request.state.console_session = session
        c.metrics.sign_ins.labels("ok").inc()
        response = c.redirect("/apps")
        c.set_cookie(response, session)
        return response

    @router.post("/sign-out")
    async def sign_out(c: ConsoleDep, post: PostDep) -> Response:
        post.session.ended = True
        response = c.redirect("/sign-in")
        c.clear_cookie(response)
        return response

    return router
