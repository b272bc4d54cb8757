"""Sign-in with a control key, sign-out. The key is checked by the gateway's Authenticator (the
same lookup as `Authorization: Token <key>`), then forgotten: only the session id goes out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scheduler_ingest.auth import MAX_HEADER_CHARS
from scheduler_ingest.console.web import COOKIE, ConsoleDep, PostDep
from scheduler_ingest.errors import ApiError


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/")
    async def home(request: Request, c: ConsoleDep) -> Response:
        signed_in = c.sessions.get(request.cookies.get(COOKIE)) is not None
        return c.redirect("/apps" if signed_in else "/sign-in")

    @router.get("/sign-in")
    async def sign_in_form(request: Request, c: ConsoleDep) -> Response:
        return c.render(request, "sign_in.html", {"title": "Sign in"})

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
        c.sessions.close(request.cookies.get(COOKIE))  # no session fixation
        session = c.sessions.open(principal)
        c.metrics.sign_ins.labels("ok").inc()
        c.metrics.sessions.set(len(c.sessions))
        response = c.redirect("/apps")
        c.set_cookie(response, session)
        return response

    @router.post("/sign-out")
    async def sign_out(c: ConsoleDep, post: PostDep) -> Response:
        c.sessions.close(post.session.session_id)
        c.metrics.sessions.set(len(c.sessions))
        response = c.redirect("/sign-in")
        c.clear_cookie(response)
        return response

    return router
