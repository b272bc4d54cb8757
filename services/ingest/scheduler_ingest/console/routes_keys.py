"""Data keys (per app) and control keys (per owner): create (the secret is in that one response
and nowhere else, never stored or shown again), list, deactivate."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scheduler_ingest.console.web import (
    ConsoleDep,
    PostDep,
    SessionDep,
    confirm_page,
    confirmed,
)
from scheduler_ingest.errors import ApiError


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
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, key_id: str
    ) -> Response:
        if not confirmed(post):
            keys = await c.gw.control.list_data_keys(post.session.principal, app_id)
            if key_id not in {k.id for k in keys}:
                raise ApiError(404, "not_found", "no such data key in this application")
            return confirm_page(
                c,
                request,
                post,
                title=f"Deactivate data key {key_id}?",
                consequence="Requests signed with it are refused from then on (within the key"
                " cache time on other replicas). A deactivated key cannot be reactivated.",
                action=f"/apps/{app_id}/data-keys/{key_id}/deactivate",
                button="Deactivate data key",
                back=f"/apps/{app_id}",
            )
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
            {
                "title": "Control keys",
                "keys": keys,
                "current": session.principal.key_id,
                "active": sum(1 for k in keys if k.active),
            },
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
    async def deactivate_control_key(
        request: Request, c: ConsoleDep, post: PostDep, key_id: str
    ) -> Response:
        own = key_id == post.session.principal.key_id
        try:
            if not confirmed(post):
                keys = await c.gw.control.list_control_keys(post.session.principal)
                if key_id not in {k.id for k in keys}:
                    raise ApiError(404, "not_found", "no such control key for this owner")
                if [k.id for k in keys if k.active] == [key_id]:
                    raise ApiError(409, "last_control_key", "")
                signs_out = " It is the key of this session: you will be signed out." if own else ""
                return confirm_page(
                    c,
                    request,
                    post,
                    title=f"Deactivate control key {key_id}?",
                    consequence="It can no longer sign in or call the control API, and every"
                    f" console session opened with it ends. This cannot be undone.{signs_out}",
                    action=f"/control-keys/{key_id}/deactivate",
                    button="Deactivate control key",
                    back="/control-keys",
                )
            await c.gw.control.deactivate_control_key(post.session.principal, key_id)
        except ApiError as exc:
            if exc.token != "last_control_key":  # noqa: S105 - an error token
                raise
            post.session.notices.append(
                f"Not deactivated: {key_id} is your last active control key, and without one"
                " you could not sign in again. Create another control key first."
            )
            return c.redirect("/control-keys")
        c.metrics.actions.labels("deactivate_control_key").inc()
        # Sessions opened with it (on any replica) end at their next page: each page checks
        # that the session's key is still active.
        if own:
            post.session.ended = True
            response = c.redirect("/sign-in?ended=key")
            c.clear_cookie(response)
            return response
        post.session.notices.append(f"Control key {key_id} deactivated.")
        return c.redirect("/control-keys")

    return router
