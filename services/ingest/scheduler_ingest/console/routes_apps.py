"""Applications: list, register, detail (with data keys and the quick start), edit (with the
delivery policy and the failure destination), pause and resume its deliveries, delete, usage
chart. Every page goes through ControlService, so another owner's app is a 404."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.store.ports import Application
from scheduler.store.usage import usage_day
from scheduler_ingest.console.chart import SERIES, usage_chart
from scheduler_ingest.console.forms import POLICY_FIELDS, RATE_HOLD, AppForm, policy_rows
from scheduler_ingest.console.sessions import Session
from scheduler_ingest.console.web import (
    PREFIX,
    Console,
    ConsoleDep,
    PostDep,
    SessionDep,
    confirm_page,
    confirmed,
)
from scheduler_ingest.errors import ApiError

RECENT_DAYS = 14  # the usage chart on phones
QUICK_START_AHEAD_MS = 120_000  # the quick start's sendAt: two minutes after the page was shown


def deleted_notice(name: str) -> str:
    """What became of a deleted application's messages (the record writer's lazy purge)."""
    return (
        f"Application {name} deleted; its data keys are deactivated. Its pending messages"
        " (READY or QUEUED) will not be delivered: each ends ABORTED with the reason"
        " \u201capplication deleted\u201d when its time comes. Its messages are no longer"
        " listed in the console."
    )


def quick_start_send_at(now_ms: int) -> str:
    """A sendAt for the quick start: a couple of minutes from now, whole seconds, UTC."""
    at = (now_ms + QUICK_START_AHEAD_MS) // 1000 * 1000
    return format_rfc3339_ms(at).replace(".000Z", "Z")


PAUSE_CONSEQUENCE = (
    "Its messages that come due wait: they stay QUEUED, are not attempted and are not failed"
    " (the wait does not count toward a max event age). Scheduling goes on, and aborts still"
    " work. Resuming delivers what waited at once, at the application's rate limit if it has"
    " one. Waiting messages are held in the dispatchers' memory: do not leave a busy"
    " application paused for hours."
)


def form_page(
    c: Console,
    request: Request,
    form: AppForm,
    app: Application | None,
    session: Session,
    status: int = 200,
) -> Response:
    title = f"Edit {app.name}" if app is not None else "Register an application"
    return c.render(
        request,
        "app_form.html",
        {
            "title": title,
            "form": form,
            "app": app,
            "policy_fields": POLICY_FIELDS,
            "rate_hold": RATE_HOLD,
        },
        status,
        session,
    )


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/apps")
    async def apps(request: Request, c: ConsoleDep, session: SessionDep) -> Response:
        found = await c.gw.control.list_apps(session.principal)
        return c.render(
            request, "apps.html", {"title": "Applications", "apps": found}, session=session
        )

    @router.get("/apps/new")
    async def new_app_form(request: Request, c: ConsoleDep, session: SessionDep) -> Response:
        return form_page(c, request, AppForm(), None, session)

    @router.post("/apps/new")
    async def register(request: Request, c: ConsoleDep, post: PostDep) -> Response:
        form = AppForm.of(post.form)
        body = form.to_create()
        if body is not None:
            try:
                created = await c.gw.control.create_app(post.session.principal, body)
            except ApiError as exc:
                if not form.show_service_error(exc):
                    raise
            else:
                c.metrics.actions.labels("register_app").inc()
                post.session.notices.extend(created.warnings)
                return c.render(
                    request,
                    "app_created.html",
                    {"title": "Application registered", "app": created},
                    session=post.session,
                )
        return form_page(c, request, form, None, post.session, 400)

    @router.get("/apps/{app_id}")
    async def app_detail(
        request: Request, c: ConsoleDep, session: SessionDep, app_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        keys = await c.gw.control.list_data_keys(session.principal, app_id)
        return c.render(
            request,
            "app_detail.html",
            {
                "title": app.name,
                "app": app,
                "keys": keys,
                "policy": policy_rows(app.policy),
                # The API's base URL: the console's, without its own prefix.
                "base_url": str(request.base_url).rstrip("/").removesuffix(PREFIX),
                "send_at": quick_start_send_at(c.clock.now_ms()),
            },
            session=session,
        )

    @router.get("/apps/{app_id}/edit")
    async def edit_form(
        request: Request, c: ConsoleDep, session: SessionDep, app_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        return form_page(c, request, AppForm.of_app(app), app, session)

    @router.post("/apps/{app_id}/edit")
    async def edit(request: Request, c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        form = AppForm.of(post.form)
        form.type = app.type  # the delivery type is fixed at registration
        body = form.to_update(app)
        if body is not None:
            try:
                saved = await c.gw.control.update_app(post.session.principal, app_id, body)
            except ApiError as exc:
                if not form.show_service_error(exc, app):
                    raise
            else:
                c.metrics.actions.labels("edit_app").inc()
                post.session.notices.append("Application saved.")
                post.session.notices.extend(saved.warnings)
                return c.redirect(f"/apps/{app_id}")
        return form_page(c, request, form, app, post.session, 400)

    @router.post("/apps/{app_id}/delete")
    async def delete(c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        if post.text("confirm") != app.name:
            post.session.notices.append("Not deleted: type the application's name to confirm.")
            return c.redirect(f"/apps/{app_id}")
        await c.gw.control.delete_app(post.session.principal, app_id)
        c.metrics.actions.labels("delete_app").inc()
        post.session.notices.append(deleted_notice(app.name))
        return c.redirect("/apps")

    @router.post("/apps/{app_id}/pause")
    async def pause(request: Request, c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        if not confirmed(post):
            return confirm_page(
                c,
                request,
                post,
                title=f"Pause the deliveries of {app.name}?",
                consequence=PAUSE_CONSEQUENCE,
                action=f"/apps/{app_id}/pause",
                button="Pause deliveries",
                back=f"/apps/{app_id}",
            )
        await c.gw.control.set_deliveries_paused(post.session.principal, app_id, True)
        c.metrics.actions.labels("pause_deliveries").inc()
        post.session.notices.append(
            f"Deliveries of {app.name} paused: due messages wait until you resume."
        )
        return c.redirect(f"/apps/{app_id}")

    @router.post("/apps/{app_id}/resume")
    async def resume(c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        app = await c.gw.control.set_deliveries_paused(post.session.principal, app_id, False)
        c.metrics.actions.labels("resume_deliveries").inc()
        post.session.notices.append(
            f"Deliveries of {app.name} resumed: what waited is delivered now"
            " (at the rate limit, if any)."
        )
        return c.redirect(f"/apps/{app_id}")

    @router.post("/apps/{app_id}/signing-secret/rotate")
    async def rotate(request: Request, c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        if not confirmed(post):
            return confirm_page(
                c,
                request,
                post,
                title=f"Rotate the signing secret of {app.name}?",
                consequence="A new webhook signing secret signs deliveries from now on; the"
                " current one keeps verifying only until the end of a grace period. This"
                " cannot be undone.",
                action=f"/apps/{app_id}/signing-secret/rotate",
                button="Rotate the signing secret",
                back=f"/apps/{app_id}",
            )
        rotated = await c.gw.control.rotate_signing_secret(post.session.principal, app_id)
        c.metrics.actions.labels("rotate_signing_secret").inc()
        return c.render(
            request,
            "secret_rotated.html",
            {
                "title": "Signing secret rotated",
                "app": app,
                "secret": rotated["signingSecret"],
                "valid_until": rotated["previousSecretValidUntil"],
            },
            session=post.session,
        )

    @router.get("/apps/{app_id}/usage")
    async def usage(request: Request, c: ConsoleDep, session: SessionDep, app_id: str) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        last = usage_day(c.clock.now_ms())
        first = last - c.settings.usage_default_days + 1
        days = await c.gw.control.usage(session.principal, app_id, first, last)
        return c.render(
            request,
            "usage.html",
            {
                "title": f"Usage of {app.name}",
                "app": app,
                "chart": usage_chart(days, first, last),
                # On phones: the last days only (CSS shows one chart or the other).
                "recent": usage_chart(days, max(first, last - RECENT_DAYS + 1), last),
                "series": SERIES,
            },
            session=session,
        )

    return router
