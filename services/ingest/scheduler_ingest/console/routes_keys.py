"""Data keys (per app) and control keys (per owner): create (the secret is in that one response
and nowhere else, never stored or shown again), list, deactivate."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scheduler_ingest.console.web import ConsoleDep, PostDep, SessionDep


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post("/apps/{app_id}/data-keys")
    async def create_data_key(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        created = await c.gw.control.create_data_key(post.session.principal, app_id)
        c.metrics.actions.labels("create_data_key").inc()
        return c.render(
            request,
            "key_created.html",
            {
                "title": "Data key created",
                "kind": "data key",
                "key": created,
                "app": app,
                "back": f"/apps/{app_id}",
            },
            session=post.session,
        )

    @router.post("/apps/{app_id}/data-keys/{key_id}/deactivate")
    async def deactivate_data_key(
        c: ConsoleDep, post: PostDep, app_id: str, key_id: str
    ) -> Response:
        await c.gw.control.deactivate_data_key(post.session.principal, app_id, key_id)
        c.metrics.actions.labels("deactivate_data_key").inc()
        post.session.notices.append(f"Data key {key_id} deactivated.")
        return c.redirect(f"/apps/{app_id}")

    @router.get("/control-keys")
    async def control_keys(request: Request, c: ConsoleDep, session: SessionDep) -> Response:
        keys = await c.gw.control.list_control_keys(session.principal)
        return c.render(
            request,
            "control_keys.html",
            {"title": "Control keys", "keys": keys, "current": session.principal.key_id},
            session=session,
        )

    @router.post("/control-keys")
    async def create_control_key(request: Request, c: ConsoleDep, post: PostDep) -> Response:
        created = await c.gw.control.create_control_key(post.session.principal)
        c.metrics.actions.labels("create_control_key").inc()
        return c.render(
            request,
            "key_created.html",
            {
                "title": "Control key created",
                "kind": "control key",
                "key": created,
                "app": None,
                "back": "/control-keys",
            },
            session=post.session,
        )

    @router.post("/control-keys/{key_id}/deactivate")
    async def deactivate_control_key(c: ConsoleDep, post: PostDep, key_id: str) -> Response:
        await c.gw.control.deactivate_control_key(post.session.principal, key_id)
        c.metrics.actions.labels("deactivate_control_key").inc()
        c.sessions.close_where_key(key_id)  # sessions opened with it end here and now
        if key_id == post.session.principal.key_id:
            response = c.redirect("/sign-in")
            c.clear_cookie(response)
            return response
        post.session.notices.append(f"Control key {key_id} deactivated.")
        return c.redirect("/control-keys")

    return router
