"""docs/API.md against the ingest app (fakes, ManualClock): every curl example runs and answers
200 with the fields the doc shows, the Python examples run as written, every route and every
error token of the code is in the reference."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from scheduler.domain.status import Status
from scheduler.store.ports import LogEntry, StatusUpdate
from tests.unit.ingest.harness import Harness, basic

from .markdown import ROOT, Block, blocks

pytestmark = pytest.mark.unit

DOC = "docs/API.md"
BASE = "http://127.0.0.1:8080"
_VAR = re.compile(r"\$\{?([A-Z_]+)\}?")


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def _control_secret(h: Harness) -> str:
    return h.alice.control["Authorization"].removeprefix("Token ")


def _failed_message(h: Harness, headers: dict[str, str]) -> str:
    """A message of the app of `headers`, recorded FAILED (as the record writer would)."""
    r = h.client.post(
        "/messages", json={"payload": "x", "sendAt": "2030-01-01T00:00:00Z"}, headers=headers
    )
    message_id: str = r.raise_for_status().json()["messageId"]
    app_id = h.client.get(f"/messages/{message_id}", headers=headers).json()["appId"]
    [view] = [v for v in [h.messages.get(app_id, message_id)] if v is not None]
    now = h.clock.now_ms()
    failed = StatusUpdate(Status.FAILED, 0, 3, view.state.due_ms, now, http_status=500)
    h.messages.update_status(
        app_id, message_id, failed, LogEntry(now, "0:3:failed", Status.FAILED, {})
    )
    return message_id


def _curl_commands(block: Block) -> list[str]:
    joined = block.code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]


def _run_curl(client: TestClient, command: str, env: dict[str, str]) -> httpx.Response:
    words = shlex.split(_VAR.sub(lambda m: env[m.group(1)], command))[1:]
    method, headers, auth, data, url = None, {}, None, None, None
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-X", "-H", "-u", "-d"):
            value = words[i + 1]
            i += 2
            if word == "-X":
                method = value
            elif word == "-H":
                name, _, header_value = value.partition(":")
                headers[name.strip()] = header_value.strip()
            elif word == "-u":
                user, _, password = value.partition(":")
                auth = (user, password)
            else:
                data = value
            continue
        if word.startswith("-"):
            assert word in ("-sS", "-s", "-S"), f"option the test does not know: {word}"
        else:
            url = word
        i += 1
    assert url is not None and url.startswith(BASE), command
    method = method or ("POST" if data is not None else "GET")
    if data is not None:
        json.loads(data)  # the documented body is valid JSON
    return client.request(
        method,
        url.removeprefix(BASE),
        content=data.encode() if data is not None else None,
        headers=headers,
        auth=auth,
    )


def _same_shape(documented: Any, actual: Any, where: str) -> None:
    if isinstance(documented, dict):
        assert isinstance(actual, dict), where
        shown = set(documented) - {"..."}
        if "..." in documented:
            assert shown <= set(actual), (where, shown - set(actual))
        else:
            assert shown == set(actual), (where, shown ^ set(actual))
        for key in shown:
            _same_shape(documented[key], actual[key], f"{where}.{key}")
    elif isinstance(documented, list) and documented and actual:
        assert isinstance(actual, list), where
        if len(documented) == len(actual):
            for i, (d, a) in enumerate(zip(documented, actual, strict=True)):
                _same_shape(d, a, f"{where}[{i}]")
        else:
            _same_shape(documented[0], actual[0], f"{where}[0]")


def test_every_curl_example_runs_and_answers_what_the_doc_shows(h: Harness) -> None:
    env = {"BASE": BASE, "CONTROL_KEY": _control_secret(h)}
    all_blocks = blocks(DOC)
    ran = 0
    for index, block in enumerate(all_blocks):
        commands = _curl_commands(block) if block.lang == "bash" else []
        for command in commands:
            if "/redrive" in command:
                data = basic(env["APP_ID"], env["DATA_KEY"])
                env["MESSAGE_ID"] = _failed_message(h, data)
            r = _run_curl(h.client, command, env)
            assert r.status_code == 200, (block.line, command, r.text)
            answer = r.json()
            ran += 1
            if "POST" in command and command.endswith('/applications"'):
                pass
            if isinstance(answer, dict) and "signingSecret" in answer:
                env["APP_ID"] = answer["id"]
            elif isinstance(answer, dict) and set(answer) == {"id", "secret"}:
                env["DATA_KEY"] = answer["secret"]
            elif isinstance(answer, dict) and "scheduledMessageId" in answer:
                env["MESSAGE_ID"] = answer["messageId"]
            following = all_blocks[index + 1] if index + 1 < len(all_blocks) else None
            if following is not None and following.lang == "json" and len(commands) == 1:
                _same_shape(json.loads(following.code), answer, f"{DOC}:{following.line}")
    assert ran >= 10


def test_the_python_examples_run_as_written(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def client(
        base_url: str, headers: dict[str, str] | None = None, auth: Any = None
    ) -> TestClient:
        assert base_url == BASE
        c = TestClient(h.app, base_url=base_url, headers=headers)
        if auth is not None:
            c.auth = auth
        return c

    monkeypatch.setattr(httpx, "Client", client)
    monkeypatch.setenv("CONTROL_KEY", _control_secret(h))
    namespace: dict[str, Any] = {"__name__": "api_doc_example"}
    python = blocks(DOC, "python")
    assert len(python) >= 4
    for block in python:
        if "/redrive" in block.code:
            data = basic(namespace["app_id"], namespace["data_key"])
            namespace["message_id"] = _failed_message(h, data)
        exec(compile(block.code, f"{DOC}:{block.line}", "exec"), namespace)
    assert namespace["scheduled"]["status"] == "READY"
    assert namespace["batch"]["accepted"] == 1 and namespace["batch"]["rejected"] == 1
    assert namespace["redriven"]["generation"] == 1
    assert namespace["signing_secret"].startswith("whsec_")


def test_every_route_of_the_app_is_in_the_reference(h: Harness) -> None:
    text = (ROOT / DOC).read_text(encoding="utf-8")
    spec = h.client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "dashboard" in operation.get("tags", []):
                assert "`GET /applications/{appId}/messages`" in text
                continue
            assert f"{method.upper()} {path}" in text, (method, path)


def test_every_error_token_of_the_code_is_in_the_reference() -> None:
    text = (ROOT / DOC).read_text(encoding="utf-8")
    sources = [
        *sorted((ROOT / "services/ingest/scheduler_ingest").glob("*.py")),
        ROOT / "libs/scheduler/domain/sendat.py",
    ]
    tokens: set[str] = set()
    for source in sources:
        code = source.read_text(encoding="utf-8")
        tokens |= set(re.findall(r"ApiError\(\s*\d{3},\s*\"(\w+)\"", code))
        tokens |= set(re.findall(r"ValidationError\(\s*\"(\w+)\"", code))
        tokens |= set(re.findall(r"^(?:INVALID|MISSING): Final = \"(\w+)\"", code, re.M))
        tokens |= set(re.findall(r"\d{3}: \"(\w+)\"", code))  # errors._HTTP_TOKENS
    tokens |= {"invalid_idempotencyKey", "invalid_kafkaKey"}  # f"invalid_{name}" in bodies.py
    assert {"unauthorized", "too_late", "invalid_sendAt", "method_not_allowed"} <= tokens
    for token in sorted(tokens):
        assert f"`{token}`" in text, token
