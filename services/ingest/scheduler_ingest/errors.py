"""JSON errors everywhere: `{"error": "<token>", "message": "<text>"}`, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.domain.errors import ValidationError

log = logging.getLogger("scheduler_ingest.errors")


class ApiError(Exception):
    """An answer other than success, with the API's error token."""

    def __init__(
        self,
        status: int,
        token: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.token = token
        self.message = message
        self.headers = dict(headers or {})

    @classmethod
    def invalid(cls, error: ValidationError) -> ApiError:
        status = 413 if error.token == "payload_too_large" else 400  # noqa: S105
        return cls(status, error.token, error.message)


def error_response(
    status: int, token: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": token, "message": message}, status, headers=dict(headers or {}))


_HTTP_TOKENS = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def validation_token(exc: RequestValidationError) -> tuple[str, str]:
    """The token and message of FastAPI's request validation error (first error only)."""
    errors = list(exc.errors())
    if not errors:
        return "invalid_request", "invalid request"
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = [str(part) for part in first.get("loc", ())]
    where = ".".join(loc[1:]) or (loc[0] if loc else "request")
    if kind == "json_invalid":
        return "invalid_json", "the body is not valid JSON"
    if kind == "extra_forbidden":
        return "unknown_field", f"unknown field {where!r}"
    if kind == "missing" and loc == ["body"]:
        return "invalid_json", "a JSON body is required"
    if loc and loc[0] in ("query", "path"):
        return "invalid_parameter", f"{where}: {first.get('msg', 'invalid')}"
    return "invalid_request", f"{where}: {first.get('msg', 'invalid')}"


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.token, exc.message, exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        token, message = validation_token(exc)
        return error_response(400, token, message)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        token = _HTTP_TOKENS.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else token
        return error_response(exc.status_code, token, message, exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error; it has been logged")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
