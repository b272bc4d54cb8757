from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler_ingest.settings import IngestSettings
from tests.unit.ingest.harness import Harness

from .browser import Browser


@pytest.fixture
def h() -> Iterator[Harness]:
    # TestClient talks plain http://testserver: a Secure cookie would never be sent back.
    harness = Harness(settings=IngestSettings(usage_flush_ms=0, console_cookie_secure=False))
    yield harness
    harness.close()


@pytest.fixture
def alice(h: Harness) -> Browser:
    """Alice, signed in to the console."""
    browser = Browser(h)
    browser.sign_in(h.alice.control["Authorization"].removeprefix("Token "))
    return browser
