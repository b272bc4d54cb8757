"""Failure notices through the whole system (real processes: the dispatcher runs the notifier
as its child process): a REST app whose endpoint always answers 500 uses up its attempts, the
message ends FAILED, and the app's failure webhook receives one signed notice of it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from scheduler.clock import SystemClock
from scheduler_releaser.dispatcher.signing import verify
from tests.support.processes import wait_for

from .conftest import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOCK = SystemClock()
MAX_ATTEMPTS = 3  # SCHEDULER_DISPATCH_MAX_ATTEMPTS of the launched processes


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hooks:
    """/always answers 500 (the app's endpoint), anything else 200 (its failure webhook)."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]


@contextmanager
def hooks() -> Iterator[Hooks]:
    state = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                state.hits.append(Hit(self.path, headers, body))
            self.send_response(500 if self.path == "/always" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_a_message_that_ends_failed_is_noticed_once_at_the_failure_webhook(
    shared_world: World,
) -> None:
    w = shared_world
    control = {"Authorization": f"Token {w.control_key}"}
    api = w.system.ingest
    with hooks() as h:
        created = httpx.post(
            f"{api}/applications",
            headers=control,
            json={
                "name": "e2e-failing",
                "type": "REST",
                "endpoint": h.url("/always"),
                "failureDestination": {"type": "REST", "endpoint": h.url("/failed")},
            },
            timeout=30,
        )
        assert created.status_code == 200, created.text
        app_id, secret = created.json()["id"], created.json()["signingSecret"]
        assert created.json()["failureDestination"] == {
            "type": "REST",
            "endpoint": h.url("/failed"),
        }
        key = httpx.post(f"{api}/applications/{app_id}/data-keys", headers=control, timeout=30)
        assert key.status_code == 200, key.text
        basic = base64.b64encode(f"{app_id}:{key.json()['secret']}".encode()).decode()
        with httpx.Client(
            base_url=api, headers={"Authorization": f"Basic {basic}"}, timeout=30
        ) as client:
            send_at = CLOCK.now_ms() + 1_000
            answer = client.post("/messages", json={"payload": {"order": 7}, "sendAt": send_at})
            assert answer.status_code == 200, answer.text
            message_id = answer.json()["scheduledMessageId"]
            wait_for("the failure notice", lambda: len(h.at("/failed")) >= 1, 60)
            failed_at = CLOCK.now_ms()
            record = client.get(f"/messages/{message_id}").json()
            time.sleep(3)  # a second notice would show by now
        attempts = h.at("/always")
        notices = h.at("/failed")
    assert [a.headers["x-scheduler-attempt"] for a in attempts] == ["1", "2", "3"]
    assert all("x-scheduler-event" not in a.headers for a in attempts)
    assert len(notices) == 1, f"{len(notices)} notices"
    [notice] = notices
    assert notice.headers["x-scheduler-event"] == "message.failed"
    assert notice.headers["x-scheduler-message-id"] == message_id
    timestamp = int(notice.headers["x-scheduler-timestamp"])
    assert verify(secret, timestamp, notice.body, notice.headers["x-scheduler-signature"])
    body = json.loads(notice.body)
    assert body["messageId"] == message_id and body["appId"] == app_id
    assert body["attempts"] == MAX_ATTEMPTS and body["lastHttpStatus"] == 500
    assert body["payload"] == {"order": 7}
    assert body["generation"] == 0
    # the notice follows the FAILED result's commit; the record may lag it by a moment
    assert record["status"] in ("FAILED", "QUEUED"), record
    assert timestamp <= failed_at
