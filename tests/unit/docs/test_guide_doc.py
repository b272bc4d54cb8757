"""docs/GUIDE.md against the ingest app (fakes, ManualClock): every curl example answers 200,
and the Python examples run as written, in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.unit.ingest.harness import Harness, basic

from .markdown import blocks
from .test_api_doc import BASE, _control_secret, _curl_commands, _failed_message, _run_curl

pytestmark = pytest.mark.unit

DOC = "docs/GUIDE.md"


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def _tenant(h: Harness) -> dict[str, str]:
    """What the guide assumes: a control key, an application, a data key, a message to move."""
    control = _control_secret(h)
    key = h.client.post(f"/applications/{h.alice.app_id}/data-keys", headers=h.alice.control)
    secret = key.raise_for_status().json()["secret"]
    scheduled = h.client.post(
        "/messages",
        json={"payload": 1, "sendAt": "2030-01-01T12:00:00Z"},
        headers=basic(h.alice.app_id, secret),
    )
    message_id = scheduled.raise_for_status().json()["messageId"]
    return {
        "BASE": BASE,
        "CONTROL_KEY": control,
        "APP_ID": h.alice.app_id,
        "DATA_KEY": secret,
        "MESSAGE_ID": message_id,
    }


def test_every_curl_example_of_the_guide_answers_200(h: Harness) -> None:
    env = _tenant(h)
    ran = 0
    for block in blocks(DOC, "bash"):
        for command in _curl_commands(block):
            if "/redrive" in command:
                _failed_message(h, basic(env["APP_ID"], env["DATA_KEY"]))
            r = _run_curl(h.client, command, env)
            assert r.status_code == 200, (block.line, command, r.text)
            ran += 1
            h.clock.advance(1_000)  # a person typing: a resume comes after its pause
    assert ran >= 8
    app = h.apps.get_app(h.alice.app_id)
    assert app is not None and app.policy.rate_per_second == 10
    assert app.failure_endpoint == "https://example.com/hooks/failed"
    assert app.deliveries_paused is False  # paused, then resumed


def test_the_python_examples_of_the_guide_run_as_written(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def client(
        base_url: str, headers: dict[str, str] | None = None, auth: Any = None
    ) -> TestClient:
        assert base_url == BASE
        c = TestClient(h.app, base_url=base_url, headers=headers)
        if auth is not None:
            c.auth = auth
        return c

    monkeypatch.setattr(httpx, "Client", client)
    env = _tenant(h)
    namespace: dict[str, Any] = {
        "__name__": "guide_example",
        "CONTROL_KEY": env["CONTROL_KEY"],
        "APP_ID": env["APP_ID"],
        "DATA_KEY": env["DATA_KEY"],
        "message_id": env["MESSAGE_ID"],
    }
    python = blocks(DOC, "python")
    assert len(python) >= 5
    for block in python:
        h.clock.advance(1_000)
        if "/redrive" in block.code:
            _failed_message(h, basic(env["APP_ID"], env["DATA_KEY"]))
        exec(compile(block.code, f"{DOC}:{block.line}", "exec"), namespace)
    assert namespace["schedule"]["timezone"] == "Europe/Berlin"
    assert namespace["moved"]["generation"] == 1
    assert namespace["done"]["nextCursor"] is None
