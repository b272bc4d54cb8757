"""The application form: browser fields to the API's request bodies (ApplicationCreate,
ApplicationUpdate), so the console validates exactly like `POST/PUT /applications`. Errors come
back per form field, for the messages next to each input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from scheduler.store.ports import Application
from scheduler_ingest.models import ApplicationCreate, ApplicationUpdate

# API field path -> form field name
_FIELDS = {
    ("name",): "name",
    ("type",): "type",
    ("endpoint",): "endpoint",
    ("description",): "description",
    ("sendBackFormat",): "send_back_format",
    ("httpAuthorization", "headerName"): "auth_header_name",
    ("httpAuthorization", "headerValue"): "auth_header_value",
    ("httpAuthorization",): "auth_header_name",
}
_MESSAGES = {
    "name": "Enter a name (at most 200 characters).",
    "type": "Choose REST or KAFKA.",
    "endpoint": "Enter the endpoint: an http(s) URL for REST, a topic name for KAFKA.",
    "description": "The description is too long (at most 2,000 characters).",
    "send_back_format": "Choose a body format.",
    "auth_header_name": "A header name is letters, digits and - only (e.g. Authorization).",
    "auth_header_value": "Enter the header value (no control characters).",
}


@dataclass
class AppForm:
    """What the user typed (echoed back on errors; the header value never is)."""

    name: str = ""
    type: str = "REST"
    endpoint: str = ""
    description: str = ""
    auth_header_name: str = ""
    auth_header_value: str = ""
    send_back_format: str = "payload_field"
    remove_auth: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, form: Mapping[str, Any]) -> AppForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(
            name=text("name"),
            type=text("type") or "REST",
            endpoint=text("endpoint"),
            description=text("description"),
            auth_header_name=text("auth_header_name"),
            auth_header_value=text("auth_header_value"),
            send_back_format=text("send_back_format") or "payload_field",
            remove_auth=form.get("remove_auth") == "on",
        )

    @classmethod
    def of_app(cls, app: Application) -> AppForm:
        return cls(
            name=app.name,
            type=app.type,
            endpoint=app.endpoint,
            description=app.description or "",
            auth_header_name=app.auth_header_name or "",
            send_back_format=app.send_back_format,
        )

    def _auth(self, kept_value: str | None) -> dict[str, str] | None:
        if not self.auth_header_name and not self.auth_header_value:
            return None
        value = self.auth_header_value or kept_value or ""
        return {"headerName": self.auth_header_name, "headerValue": value}

    def to_create(self) -> ApplicationCreate | None:
        """The API body, or None with `errors` filled in."""
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "endpoint": self.endpoint,
            "description": self.description or None,
            "sendBackFormat": self.send_back_format,
        }
        auth = self._auth(None)
        if auth is not None:
            body["httpAuthorization"] = auth
        return _validated(ApplicationCreate, body, self.errors)

    def to_update(self, app: Application) -> ApplicationUpdate | None:
        """A full update of the editable fields. A blank header value keeps the stored one (it
        is never sent to the browser); "remove" drops the header."""
        body: dict[str, Any] = {
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description or None,
            "sendBackFormat": self.send_back_format,
        }
        if self.remove_auth:
            body["httpAuthorization"] = None
        else:
            kept = app.auth_header_value if app.auth_header_name else None
            auth = self._auth(kept)
            if auth is not None:
                body["httpAuthorization"] = auth
        return _validated(ApplicationUpdate, body, self.errors)


M = TypeVar("M", bound=pydantic.BaseModel)


def _validated(model: type[M], body: dict[str, Any], errors: dict[str, str]) -> M | None:
    """The model, or None with one message per form field that failed."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(p) for p in error["loc"])
            name = _FIELDS.get(loc) or _FIELDS.get(loc[:1], "name")
            errors.setdefault(name, _MESSAGES[name])
        return None
