"""Messages of an application: list (status filter, newest first, paging), detail with logs,
abort, redrive and reschedule, and the bulk abort and redrive of a filter: the MessageService
and BulkRunner calls of the JSON routes, scoped to an owned app."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from scheduler.domain.status import Status
from scheduler.store.ports import Application
from scheduler_ingest.bulk import BulkCursor, BulkOperation, BulkRequest, BulkResult, BulkRunner
from scheduler_ingest.console.forms import (
    BULK_CHOICES,
    TIME_FORMAT,
    BulkForm,
    RescheduleForm,
)
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
# One bulk submission: at most this many calls of the bulk operation (each reads up to 20,000
# messages or ~10 s, and acts on up to 1,000), and no call started after BULK_BUDGET_MS; what
# is left is a "continue" button carrying the cursor.
BULK_MAX_CALLS = 5
BULK_BUDGET_MS = 20_000


@dataclass
class BulkTotals:
    """What the calls of one submission did, added up."""

    operation: BulkOperation
    calls: int = 0
    matched: int = 0
    done: int = 0
    too_late: int = 0
    refused: int = 0
    failed: int = 0
    scanned: int = 0
    next_cursor: str | None = None

    def add(self, result: BulkResult) -> None:
        self.calls += 1
        self.matched += result.matched
        self.done += result.done
        self.too_late += result.too_late
        self.refused += result.refused
        self.failed += result.failed
        self.scanned += result.scanned
        self.next_cursor = result.next_cursor


async def run_bulk(c: Console, app_id: str, request: BulkRequest) -> BulkTotals:
    """The bulk operation, its cursor followed here as a client's loop would, within bounds.
    It stops early when Kafka refused some (`failed`): the cursor then repeats that slice, and
    a moment's wait before continuing is wise."""
    totals = BulkTotals(request.operation)
    started = c.clock.monotonic_ms()
    runner = BulkRunner(c.gw.messages)
    while True:
        result = await runner.run(app_id, request, by="console")
        totals.add(result)
        if result.next_cursor is None or result.failed or totals.calls >= BULK_MAX_CALLS:
            return totals
        if c.clock.monotonic_ms() - started >= BULK_BUDGET_MS:
            return totals
        request = dataclasses.replace(request, cursor=BulkCursor.decode(result.next_cursor))


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
        page = await _list_page(c, request, session, app, status, cursor, BulkForm())
        return page or c.redirect(f"/apps/{app_id}/messages")

    @router.post("/apps/{app_id}/messages/bulk")
    async def bulk(request: Request, c: ConsoleDep, post: PostDep, app_id: str) -> Response:
        """The bulk form: checked, then a confirmation that states the filter, then run (and
        each "continue" of a loop that stopped, with its cursor, confirmed already)."""
        app = await c.gw.control.owned_app(post.session.principal, app_id)
        form = BulkForm.of(post.form)
        filtered = form.to_request()
        if filtered is None:
            page = await _list_page(c, request, post.session, app, "", "", form, 400)
            assert page is not None  # no cursor: the listing has none to refuse
            return page
        choice = BULK_CHOICES[form.action]
        described = form.describe(filtered)
        if not confirmed(post):
            doing = "abort" if choice.operation is BulkOperation.ABORT else "redrive"
            consequence = (
                f"This will {doing} {described}, in application {app.name}."
                " Messages are read newest first, a slice at a time; what is not done in about"
                f" {BULK_BUDGET_MS // 1000} s can be continued from the next page."
            )
            if choice.operation is BulkOperation.ABORT:
                consequence += (
                    " Aborted messages are not delivered; an abort cannot be undone. Those"
                    " due within the cancel guard are delivered anyway (counted as too late)."
                )
            else:
                consequence += " Each is delivered again, from its first attempt."
            return confirm_page(
                c,
                request,
                post,
                title=f"{choice.label}?",
                consequence=consequence,
                action=f"/apps/{app_id}/messages/bulk",
                button=f"Yes, {choice.label[0].lower()}{choice.label[1:]}",
                back=f"/apps/{app_id}/messages",
                fields=form.fields(form.cursor),
            )
        totals = await run_bulk(c, app.app_id, filtered)
        c.metrics.actions.labels(f"bulk_{choice.operation}").inc()
        return c.render(
            request,
            "bulk_result.html",
            {
                "title": f"{choice.label}: {'stopped' if totals.next_cursor else 'done'}",
                "app": app,
                "choice": choice,
                "described": described,
                "totals": totals,
                "fields": form.fields(totals.next_cursor),
                "abort": choice.operation is BulkOperation.ABORT,
            },
            session=post.session,
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


async def _list_page(
    c: Console,
    request: Request,
    session: Session,
    app: Application,
    status: str,
    cursor: str,
    bulk: BulkForm,
    code: int = 200,
) -> Response | None:
    """The messages page with the bulk form as given; None for a cursor the listing refuses."""
    wanted = status if status in STATUSES else ""
    try:
        views, next_cursor = await c.gw.messages.list(
            app.app_id, wanted or None, cursor or None, PAGE_SIZE
        )
    except ApiError as exc:
        if exc.token != "invalid_cursor":  # noqa: S105 - an error token
            raise
        return None
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
            "bulk": bulk,
            "bulk_choices": BULK_CHOICES,
            "time_format": TIME_FORMAT,
        },
        code,
        session,
    )


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
