"""The ingest app (with its console) served by uvicorn on a free loopback port, on the real
Kafka and Cassandra (a private topic prefix and keyspace for this module; `served`) or on the
unit tests' in-memory fakes (`served_fakes`: layout and confirmation tests, no servers), and
Debian's chromium driven by Playwright through its executable path (never a downloaded
browser)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Playwright, sync_playwright

from scheduler.clock import SystemClock
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.usage import CassandraUsageStore
from scheduler.testing.processes import free_port
from scheduler_ingest.settings import IngestSettings
from tests.integration.ingest.conftest import LiveEnv, LiveHarness, live_env
from tests.support.tools import chromium
from tests.unit.ingest.harness import Harness

__all__ = ["live_env"]  # the module-scoped real stack fixture, shared with the ingest suite

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@dataclass
class Served:
    h: LiveHarness
    base: str  # http://127.0.0.1:<port>


@pytest.fixture(scope="module")
def served(live_env: LiveEnv) -> Iterator[Served]:
    """Alice and Bob seeded (a control key, an app and a data key each); the app on uvicorn."""
    h = LiveHarness(
        # The production default (Secure cookie): browsers treat http://127.0.0.1 as secure.
        settings=IngestSettings(usage_flush_ms=0),
        clock=SystemClock(),  # type: ignore[arg-type]
        messages=CassandraMessageStore(live_env.session),
        apps=CassandraAppStore(live_env.session),
        usage=CassandraUsageStore(live_env.session),
        publisher=live_env.publisher,
        kafka=live_env.kafka,
        suffix="-" + uuid.uuid4().hex[:8],
        start_client=False,
    )
    with _serve(h.app) as base:
        yield Served(h, base)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright, served: Served) -> Iterator[BrowserContext]:
    """A fresh chromium profile per test (nothing shared: cookies, storage, cache)."""
    with tempfile.TemporaryDirectory(prefix="console-browser-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            base_url=served.base,
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.base)
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/screenshots/ with SCHEDULER_UPDATE_SCREENSHOTS=1; otherwise a temporary directory,
    so an ordinary test run does not rewrite tracked files (ids and times change every run)."""
    if os.environ.get("SCHEDULER_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class Faked:
    h: Harness
    base: str


@pytest.fixture(scope="module")
def served_fakes() -> Iterator[Faked]:
    """The ingest app on the unit tests' in-memory fakes and a ManualClock (2026-01-01), served
    by uvicorn: for the layout and confirmation tests, which need a browser but no Kafka or
    Cassandra."""
    h = Harness(settings=IngestSettings(usage_flush_ms=0), start_client=False)
    with _serve(h.app) as base:
        yield Faked(h, base)


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def new_context(
    playwright: Playwright, profile: str, base: str, width: int, height: int = 860
) -> BrowserContext:
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=chromium(),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height},
        base_url=base,
    )
    context.set_default_timeout(15_000)
    return context
