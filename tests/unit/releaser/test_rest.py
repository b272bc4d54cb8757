"""REST delivery through the httpx adapter on a MockTransport: body, headers, signature, outcome."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest

from scheduler.clock import ManualClock
from scheduler_releaser.dispatcher.httpx_post import HttpxPost
from scheduler_releaser.dispatcher.outbound import OutboundGuard
from scheduler_releaser.dispatcher.rest import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    HEADER_MESSAGE_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    RestDeliverer,
)
from scheduler_releaser.dispatcher.signing import verify
from scheduler_releaser.dispatcher.verdict import AttemptKind

from .harness import REST_APP, public_resolver

pytestmark = pytest.mark.unit

clock = ManualClock()


def message(payload_json: str = '{"a": 1}'):
    from scheduler.records import DueMessage

    return DueMessage(
        message_id="01JAAAAAAAAAAAAAAAAAAAAAAA",
        app_id=REST_APP.app_id,
        generation=0,
        attempt=2,
        due_ms=1_767_225_600_000,
        send_at_ms=1_767_225_600_000,
        created_ms=1,
        payload_json=payload_json,
    )


def deliverer(handler, per_app: int = 4, allow_private: bool = False, resolver=public_resolver):
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)
    return RestDeliverer(HttpxPost(client), OutboundGuard(allow_private, resolver), clock, per_app)


def deliver(d: RestDeliverer, app=REST_APP, msg=None):
    return asyncio.run(d.deliver(app, msg or message()))


def test_payload_field_body_headers_and_signature() -> None:
    seen: list[httpx.Request] = []
    app = replace(REST_APP, auth_header_name="X-Api-Key", auth_header_value="k-123")
    outcome = deliver(deliverer(lambda r: seen.append(r) or httpx.Response(200)), app)
    assert outcome.kind is AttemptKind.SENT
    [request] = seen
    assert request.method == "POST" and str(request.url) == REST_APP.endpoint
    assert json.loads(request.content) == {"payload": {"a": 1}}
    h = request.headers
    assert h["content-type"] == "application/json"
    assert h["x-api-key"] == "k-123"
    assert h[HEADER_MESSAGE_ID] == "01JAAAAAAAAAAAAAAAAAAAAAAA"
    assert h[HEADER_DUE] == "2026-01-01T00:00:00.000Z"
    assert h[HEADER_ATTEMPT] == "2"
    assert verify("s3cret", int(h[HEADER_TIMESTAMP]), request.content, h[HEADER_SIGNATURE])
    assert not verify("other", int(h[HEADER_TIMESTAMP]), request.content, h[HEADER_SIGNATURE])


def test_signatures_carry_the_previous_secret_during_rotation_grace() -> None:
    seen: list[httpx.Request] = []
    app = replace(
        REST_APP,
        previous_signing_secret="old",
        previous_secret_valid_until_ms=clock.now_ms() + 1,
    )
    deliver(deliverer(lambda r: seen.append(r) or httpx.Response(200)), app)
    h = seen[0].headers
    ts = int(h[HEADER_TIMESTAMP])
    assert verify("s3cret", ts, seen[0].content, h[HEADER_SIGNATURE])
    assert verify("old", ts, seen[0].content, h[HEADER_SIGNATURE])
    expired = replace(app, previous_secret_valid_until_ms=clock.now_ms())
    deliver(deliverer(lambda r: seen.append(r) or httpx.Response(200)), expired)
    assert not verify("old", ts, seen[1].content, seen[1].headers[HEADER_SIGNATURE])


@pytest.mark.parametrize("payload", ['"text"', "0", "false", "null", "[1, 2]", '{"x": {}}'])
def test_unwrap_json_sends_the_raw_payload_even_when_falsy(payload: str) -> None:
    seen: list[httpx.Request] = []
    app = replace(REST_APP, send_back_format="unwrap_json")
    deliver(deliverer(lambda r: seen.append(r) or httpx.Response(200)), app, message(payload))
    assert json.loads(seen[0].content) == json.loads(payload)


@pytest.mark.parametrize(
    ("status", "kind", "reason"),
    [
        (200, AttemptKind.SENT, "2xx"),
        (204, AttemptKind.SENT, "2xx"),
        (301, AttemptKind.PERMANENT, "redirect"),
        (307, AttemptKind.PERMANENT, "redirect"),
        (400, AttemptKind.PERMANENT, "4xx"),
        (401, AttemptKind.PERMANENT, "4xx"),
        (408, AttemptKind.RETRYABLE, "408"),
        (429, AttemptKind.RETRYABLE, "429"),
        (500, AttemptKind.RETRYABLE, "5xx"),
        (503, AttemptKind.RETRYABLE, "5xx"),
    ],
)
def test_status_classification(status: int, kind: AttemptKind, reason: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers={"Location": "http://elsewhere.example/"})

    outcome = deliver(deliverer(handler))
    assert (outcome.kind, outcome.reason, outcome.http_status) == (kind, reason, status)
    assert len(seen) == 1  # a redirect is never followed


def test_timeout_and_connection_errors_are_retryable() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert deliver(deliverer(timeout)).kind is AttemptKind.RETRYABLE
    assert deliver(deliverer(timeout)).reason == "timeout"
    assert deliver(deliverer(refused)).reason == "connection"


def test_body_excerpt_is_bounded() -> None:
    outcome = deliver(deliverer(lambda r: httpx.Response(500, text="x" * 10_000)))
    assert outcome.body_excerpt == "x" * 512


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fd00::1"])
def test_private_destinations_are_refused_unless_allowed(address: str) -> None:
    seen: list[httpx.Request] = []

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", address]

    handler = lambda r: seen.append(r) or httpx.Response(200)  # noqa: E731
    outcome = deliver(deliverer(handler, resolver=resolver))
    assert (outcome.kind, outcome.reason) == (AttemptKind.PERMANENT, "refused_address")
    assert seen == []
    allowed = deliver(deliverer(handler, resolver=resolver, allow_private=True))
    assert allowed.kind is AttemptKind.SENT


def test_a_slow_app_does_not_hold_another_apps_deliveries() -> None:
    other = replace(REST_APP, app_id="fast", endpoint="http://fast.example/")

    async def scenario() -> list[str]:
        release = asyncio.Event()
        done: list[str] = []

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "receiver.example":
                await release.wait()
            return httpx.Response(200)

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        d = RestDeliverer(HttpxPost(client), OutboundGuard(False, public_resolver), clock, 2)

        async def one(app, tag: str) -> None:
            await d.deliver(app, message())
            done.append(tag)

        slow = [asyncio.create_task(one(REST_APP, "slow")) for _ in range(10)]
        await asyncio.wait_for(one(other, "fast"), timeout=5)
        assert done == ["fast"]
        release.set()
        await asyncio.gather(*slow)
        return done

    assert asyncio.run(scenario()).count("slow") == 10
