"""Recurring schedules of an application: list, create, detail, edit, pause, resume and delete:
the ScheduleService calls of the JSON routes, scoped to an owned app (docs/SCHEDULES.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from scheduler.domain.errors import ValidationError
from scheduler.domain.sendat import format_rfc3339_ms
from scheduler.store.ports import Application, Schedule
from scheduler_ingest.console.forms import (
    WINDOW_ERROR,
    WINDOW_MAX_MINUTES,
    minutes_of_ms,
    window_ms_of_minutes,
    window_shown,
)
from scheduler_ingest.console.sessions import Session
from scheduler_ingest.console.web import (
    Console,
    ConsoleDep,
    PostDep,
    Posted,
    SessionDep,
    confirm_page,
    confirmed,
)
from scheduler_ingest.errors import ApiError

PAGE_SIZE = 25
CATCH_UP = ("latest", "skip", "all")


@dataclass
class ScheduleForm:
    expression: str = ""
    timezone: str = "UTC"
    start: str = ""
    end: str = ""
    max_occurrences: str = ""
    catch_up: str = "latest"
    catch_up_limit: str = ""  # `all` only; "": the default (100)
    payload: str = ""
    kafka_key: str = ""
    flexible_window: str = ""  # minutes, as typed; "" or 0: none
    error: str = ""  # the service's message: one body, one refusal at a time

    @classmethod
    def of(cls, post: Posted) -> ScheduleForm:
        return cls(
            expression=post.text("expression"),
            timezone=post.text("timezone") or "UTC",
            start=post.text("start"),
            end=post.text("end"),
            max_occurrences=post.text("max_occurrences"),
            catch_up=post.text("catch_up") or "latest",
            catch_up_limit=post.text("catch_up_limit"),
            payload=post.text("payload"),
            kafka_key=post.text("kafka_key"),
            flexible_window=post.text("flexible_window"),
        )

    @classmethod
    def of_schedule(cls, s: Schedule) -> ScheduleForm:
        """The form of a stored schedule, to edit it: every field as the API would take it."""
        r = s.recurrence
        return cls(
            expression=r.expression,
            timezone=r.timezone,
            start="" if r.start_ms is None else format_rfc3339_ms(r.start_ms),
            end="" if r.end_ms is None else format_rfc3339_ms(r.end_ms),
            max_occurrences="" if r.max_occurrences is None else str(r.max_occurrences),
            catch_up=r.catch_up.value,
            catch_up_limit=str(r.catch_up_limit) if r.catch_up.value == "all" else "",
            payload=s.payload_json,
            kafka_key=s.kafka_key or "",
            flexible_window=minutes_of_ms(s.flexible_window_ms) if s.flexible_window_ms else "",
        )

    def to_body(self) -> dict[str, Any] | None:
        """The JSON body of POST /schedules (and of an update), or None with `error` set."""
        try:
            payload = json.loads(self.payload) if self.payload else None
        except ValueError:
            self.error = "The payload is not valid JSON (a string needs quotes)."
            return None
        body: dict[str, Any] = {
            "expression": self.expression,
            "timezone": self.timezone,
            "catchUp": self.catch_up,
            "payload": payload,
        }
        for name, value in (("start", self.start), ("end", self.end), ("kafkaKey", self.kafka_key)):
            if value:
                body[name] = value
        if self.max_occurrences:
            if not self.max_occurrences.isdigit():
                self.error = "Max occurrences must be a whole number."
                return None
            body["maxOccurrences"] = int(self.max_occurrences)
        if self.catch_up == "all" and self.catch_up_limit:
            if not self.catch_up_limit.isdigit():
                self.error = "Deliver all, up to: a whole number."
                return None
            body["catchUpLimit"] = int(self.catch_up_limit)
        window_ms = window_ms_of_minutes(self.flexible_window)
        if window_ms is None:
            self.error = WINDOW_ERROR
            return None
        if window_ms:
            body["flexibleWindowMs"] = window_ms
        return body


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/apps/{app_id}/schedules")
    async def schedules(
        request: Request,
        c: ConsoleDep,
        session: SessionDep,
        app_id: str,
        cursor: Annotated[str, Query(max_length=200)] = "",
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        try:
            found, next_cursor = await c.gw.schedules.list(app.app_id, cursor or None, PAGE_SIZE)
        except ApiError as exc:
            if exc.token != "invalid_cursor":  # noqa: S105 - an error token
                raise
            return c.redirect(f"/apps/{app_id}/schedules")
        return c.render(
            request,
            "schedules.html",
            {
                "title": f"Schedules of {app.name}",
                "app": app,
                "schedules": [c.gw.schedules.render(s) for s in found],
                "next_cursor": next_cursor,
                "paged": bool(cursor),
            },
            session=session,
        )

    @router.get("/apps/{app_id}/schedules/new")
    async def new_form(
        request: Request, c: ConsoleDep, session: SessionDep, app_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        return _form(c, request, app, ScheduleForm(), session)

    @router.post("/apps/{app_id}/schedules/new")
    async def create(request: Request, c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        form = ScheduleForm.of(post)
        body = form.to_body()
        if body is not None:
            try:
                created = await c.gw.schedules.create(app.app_id, body)
            except ValidationError as exc:
                form.error = exc.message
            else:
                c.metrics.actions.labels("create_schedule").inc()
                post.session.notices.append("Schedule created.")
                return c.redirect(f"/apps/{app_id}/schedules/{created.schedule_id}")
        return _form(c, request, app, form, post.session, 400)

    @router.get("/apps/{app_id}/schedules/{schedule_id}")
    async def detail(
        request: Request, c: ConsoleDep, session: SessionDep, app_id: str, schedule_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        schedule = await c.gw.schedules.get(app.app_id, schedule_id)
        return c.render(
            request,
            "schedule.html",
            {
                "title": f"Schedule {schedule_id}",
                "app": app,
                "s": c.gw.schedules.render(schedule),
                "window": window_shown(schedule.flexible_window_ms),
                "payload": schedule.payload_json,
            },
            session=session,
        )

    @router.get("/apps/{app_id}/schedules/{schedule_id}/edit")
    async def edit_form(
        request: Request, c: ConsoleDep, session: SessionDep, app_id: str, schedule_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(session.principal, app_id)
        schedule = await c.gw.schedules.get(app.app_id, schedule_id)
        return _form(
            c, request, app, ScheduleForm.of_schedule(schedule), session, editing=schedule_id
        )

    @router.post("/apps/{app_id}/schedules/{schedule_id}/edit")
    async def edit(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, schedule_id: str
    ) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        form = ScheduleForm.of(post)
        body = form.to_body()
        if body is not None:
            try:
                await c.gw.schedules.update(app.app_id, schedule_id, body)
            except ValidationError as exc:
                form.error = exc.message
            else:
                c.metrics.actions.labels("update_schedule").inc()
                post.session.notices.append(
                    "Schedule saved; occurrences already created keep what they were created with."
                )
                return c.redirect(f"/apps/{app_id}/schedules/{schedule_id}")
        return _form(c, request, app, form, post.session, 400, editing=schedule_id)

    async def act(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, schedule_id: str, kind: str
    ) -> Response:
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        here = f"/apps/{app_id}/schedules/{schedule_id}"
        if kind == "delete" and not confirmed(post):
            await c.gw.schedules.get(app.app_id, schedule_id)  # 404 for an unknown schedule
            return confirm_page(
                c,
                request,
                post,
                title=f"Delete schedule {schedule_id}?",
                consequence="No occurrence is created after this; the ones already created and"
                " not yet due are aborted. This cannot be undone.",
                action=f"{here}/delete",
                button="Delete schedule",
                back=here,
            )
        try:
            if kind == "pause":
                await c.gw.schedules.pause(app.app_id, schedule_id)
                post.session.notices.append("Schedule paused; occurrences created ahead aborted.")
            elif kind == "resume":
                await c.gw.schedules.resume(app.app_id, schedule_id)
                post.session.notices.append(
                    "Schedule resumed; occurrences its pause aborted are brought back."
                )
            else:
                await c.gw.schedules.delete(app.app_id, schedule_id)
                post.session.notices.append(f"Schedule {schedule_id} deleted.")
            c.metrics.actions.labels(f"{kind}_schedule").inc()
        except ApiError as exc:
            if exc.status == 404:
                raise
            post.session.notices.append(f"Not done: {exc.message}")
        return c.redirect(f"/apps/{app_id}/schedules" if kind == "delete" else here)

    @router.post("/apps/{app_id}/schedules/{schedule_id}/pause")
    async def pause(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, schedule_id: str
    ) -> Response:
        return await act(request, c, post, app_id, schedule_id, "pause")

    @router.post("/apps/{app_id}/schedules/{schedule_id}/resume")
    async def resume(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, schedule_id: str
    ) -> Response:
        return await act(request, c, post, app_id, schedule_id, "resume")

    @router.post("/apps/{app_id}/schedules/{schedule_id}/delete")
    async def delete(
        request: Request, c: ConsoleDep, post: PostDep, app_id: str, schedule_id: str
    ) -> Response:
        return await act(request, c, post, app_id, schedule_id, "delete")

    return router


def _form(
    c: Console,
    request: Request,
    app: Application,
    form: ScheduleForm,
    session: Session,
    status: int = 200,
    editing: str | None = None,
) -> Response:
    return c.render(
        request,
        "schedule_form.html",
        {
            "title": f"Edit schedule {editing}" if editing else "New schedule",
            "editing": editing,
            "app": app,
            "form": form,
            "catch_ups": CATCH_UP,
            "window_max_minutes": WINDOW_MAX_MINUTES,
        },
        status,
        session,
    )
