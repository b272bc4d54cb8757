"""A tiny form-filling client over the TestClient: signs in, finds the CSRF token of a page and
posts forms like a browser would (same-origin, urlencoded)."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.unit.ingest.harness import Harness

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SECRET = re.compile(r'id="secret" class="mono" readonly value="([^"]+)"')


class Browser:
    def __init__(self, h: Harness) -> None:
        self.h = h
        # Its own cookie jar: two browsers never share a session.
        self.client = TestClient(h.app, raise_server_exceptions=False)
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        r = self.client.get("/console" + path, **kwargs)
        found = CSRF.search(r.text)
        if found:
            self.csrf = html.unescape(found.group(1))
        return r

    def post(
        self, path: str, data: dict[str, str] | None = None, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form["csrf"] = self.csrf
        r = self.client.post("/console" + path, data=form, **kwargs)
        found = CSRF.search(r.text)
        if found:
            self.csrf = html.unescape(found.group(1))
        return r

    def sign_in(self, key: str) -> httpx.Response:
        r = self.post("/sign-in", {"key": key}, csrf=False)
        assert r.status_code == 200, r.text
        assert r.url.path == "/console/apps"
        return r


def secret_in(page: str) -> str:
    found = SECRET.search(page)
    assert found, "no secret on the page"
    return html.unescape(found.group(1))
