"""Messages of an application: list (status filter, newest first, paging), detail with logs,
abort, redrive and reschedule: the MessageService calls of the JSON routes, scoped to an owned
app."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from scheduler.domain.status import Status
from scheduler.store.ports import Application
from scheduler_ingest.console.forms import TIME_FORMAT, RescheduleForm
from scheduler_ingest.console.sessions import Session
from scheduler_ingest.console.web import (
    Console,
    ConsoleDep,
    PostDep,
    SessionDep,
    confirm_page,
    confirmed,
)
from scheduler_ingest.errors import ApiError
from scheduler_ingest.messages import RESCHEDULED, log_json, message_json

PAGE_SIZE = 25
STATUSES = [s.value for s in Status]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/apps/{app_id}/messages")
    async def messages(
        request: Request,
        c: ConsoleDep,
        session: SessionDep,
        app_id: str,
        status: Annotated[str, Query(max_length=16)] = "",
        cursor: Annotated[str, Query(max_length=200)] = "",
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        wanted = status if status in STATUSES else ""
        try:
            views, next_cursor = await c.gw.messages.list(
                app.app_id, wanted or None, cursor or None, PAGE_SIZE
            )
        except ApiError as exc:
            if exc.token != "invalid_cursor":  # noqa: S105 - an error token
                raise
            return c.redirect(f"/apps/{app_id}/messages")
        return c.render(
            request,
            "messages.html",
            {
                "title": f"Messages of {app.name}",
                "app": app,
                "messages": [message_json(v) for v in views],
                "status": wanted,
                "statuses": STATUSES,
                "next_cursor": next_cursor,
                "paged": bool(cursor),
            },
            session=session,
        )

    @router.get("/apps/{app_id}/messages/{message_id}")
    async def message(
        request: Request, c: ConsoleDep, session: SessionDep, app_id: str, message_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        return await _message_page(c, request, session, app, message_id, None)

    @router.post("/apps/{app_id}/messages/{message_id}/reschedule")
    async def reschedule(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, message_id: str
    ) -> Response:
        """PUT /messages/{id}/reschedule from the message page: success returns to the page
        (the new due time and generation); a refusal shows it there, what was typed kept."""
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        await c.gw.messages.get(app.app_id, message_id)  # 404 first, whatever was typed
        form = RescheduleForm.of(post.form)
        send_at_ms = form.send_at_ms()
        if send_at_ms is not None:
            try:
                moved = await c.gw.messages.reschedule(
                    app.app_id, message_id, send_at_ms, by="console"
                )
            except ApiError as exc:
                if not form.show_service_error(exc):
                    raise
                status = exc.status
            else:
                c.metrics.actions.labels("reschedule").inc()
                shown = message_json(moved)
                post.session.notices.append(
                    f"Message {message_id} rescheduled: due at {shown['dueAt']}"
                    f" (generation {shown['generation']})."
                )
                return c.redirect(f"/apps/{app_id}/messages/{message_id}")
        else:
            status = 400
        return await _message_page(c, request, post.session, app, message_id, form, status)

    async def act(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, message_id: str, kind: str
    ) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        back = post.text("back")
        target = back if back.startswith(f"/apps/{app_id}/") else f"/apps/{app_id}/messages"
        if kind == "abort" and not confirmed(post):
            await c.gw.messages.get(app.app_id, message_id)  # 404 for an unknown message
            return confirm_page(
                c,
                request,
                post,
                title=f"Abort message {message_id}?",
                consequence="It will not be delivered. An abort cannot be undone.",
                action=f"/apps/{app_id}/messages/{message_id}/abort",
                button="Abort message",
                back=target,
                fields={"back": target},
            )
        try:
            if kind == "abort":
                await c.gw.messages.abort(app.app_id, message_id, by="console")
                post.session.notices.append(f"Message {message_id} aborted.")
            else:
                await c.gw.messages.redrive(app.app_id, message_id)
                post.session.notices.append(
                    f"Message {message_id} redriven: it is delivered again."
                )
            c.metrics.actions.labels(kind).inc()
        except ApiError as exc:
            if exc.status == 404:
                raise
            post.session.notices.append(f"Not done: {exc.message}")
        return c.redirect(target)

    @router.post("/apps/{app_id}/messages/{message_id}/abort")
    async def abort(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, message_id: str
    ) -> Response:
        return await act(request, c, post, app_id, message_id, "abort")

    @router.post("/apps/{app_id}/messages/{message_id}/redrive")
    async def redrive(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, message_id: str
    ) -> Response:
        return await act(request, c, post, app_id, message_id, "redrive")

    return router


async def _message_page(
    c: Console,
    request: Request,
    session: Session,
    app: Application,
    message_id: str,
    form: RescheduleForm | None,
    code: int = 200,
) -> Response:
    """A message, its log and its actions; `form`: a reschedule refused, shown with its error."""
    view = await c.gw.messages.get(app.app_id, message_id)
    logs = await c.gw.messages.logs(app.app_id, message_id)
    shown = message_json(view)
    state = view.state
    # A reschedule answered 503 after its abort: ABORTED at the old time, not moved yet.
    # Repeating it (any time) completes it, so the form stays.
    interrupted = state.status is Status.ABORTED and any(
        e.entry_id == f"{state.generation}:aborted" and e.data.get("reason") == RESCHEDULED
        for e in logs
    )
    return c.render(
        request,
        "message.html",
        {
            "title": f"Message {message_id}",
            "app": app,
            "m": shown,
            "payload": view.content.payload_json,
            "logs": [log_json(e) for e in logs],
            "reschedulable": state.status.value in ("READY", "QUEUED") or interrupted,
            "interrupted": interrupted,
            "reschedule": form or RescheduleForm(send_at=shown["dueAt"] or ""),
            "time_format": TIME_FORMAT,
        },
        code,
        session,
    )
