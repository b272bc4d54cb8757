"""The API docs work offline: /docs (Swagger UI) and /redoc render the operations from the
project's own static files, in a real headless chromium that may reach nothing but the app."""

from __future__ import annotations

import tempfile
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Playwright, Route, expect

from tests.browser.conftest import Faked, new_context

pytestmark = [pytest.mark.tools]


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id]")],
)
def test_the_api_docs_render_with_no_network_but_the_app(
    playwright: Playwright, served_fakes: Faked, path: str, operation: str
) -> None:
    app_host = urlsplit(served_fakes.base).netloc
    outside: list[str] = []

    def only_the_app(route: Route) -> None:
        if urlsplit(route.request.url).netloc == app_host:
            route.continue_()
        else:  # a CDN, fonts, anything: refused, as without internet
            # (ReDoc's "powered by" logo is an image from its CDN: cosmetic, left out)
            if route.request.resource_type != "image":
                outside.append(route.request.url)
            route.abort()

    with tempfile.TemporaryDirectory(prefix="api-docs-") as profile:
        ctx = new_context(playwright, profile, served_fakes.base, 1280)
        try:
            ctx.route("**/*", only_the_app)
            page = ctx.new_page()
            page.goto(path)
            expect(page.locator(operation).first).to_be_visible(timeout=15_000)
            assert page.locator(operation).count() >= 10  # the routes are listed
        finally:
            ctx.close()
    assert outside == [], outside
