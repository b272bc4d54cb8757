"""Contract of the REST delivery's HTTP POST port (scheduler_releaser.dispatcher.http_post):
the aiohttp adapter of production and the httpx adapter of the unit tests, against one real
local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from aiohttp import web

from scheduler_releaser.dispatcher.http_post import (
    AiohttpPost,
    HttpPost,
    PostFailed,
    PostTimeout,
)
from scheduler_releaser.dispatcher.httpx_post import HttpxPost

pytestmark = pytest.mark.integration  # real sockets on loopback (no Kafka or Cassandra)

TIMEOUT_S = 0.5
ADAPTERS: dict[str, Callable[[], HttpPost]] = {
    "aiohttp": lambda: AiohttpPost(max_connections=8, timeout_s=TIMEOUT_S),
    "httpx": lambda: HttpxPost(httpx.AsyncClient(timeout=TIMEOUT_S)),
}


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(
        status=201, body=body, headers={"X-Got-Signature": request.headers["X-Signature"]}
    )


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"})


async def error(request: web.Request) -> web.Response:
    return web.Response(status=503, body=b"e" * 1_000_000)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(TIMEOUT_S * 4)
    return web.Response(status=200)


@asynccontextmanager
async def server() -> AsyncIterator[str]:
    """The test server on a free loopback port; yields its base URL."""
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/error", error)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def run(adapter: str, scenario: Callable[[HttpPost, str], Awaitable[None]]) -> None:
    async def main() -> None:
        async with server() as base:
            post = ADAPTERS[adapter]()
            try:
                await scenario(post, base)
            finally:
                await post.close()

    asyncio.run(main())


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_posts_the_body_and_headers_and_returns_status_and_body(adapter: str) -> None:
    async def scenario(post: HttpPost, base: str) -> None:
        answer = await post.post(f"{base}/echo", b'{"a":1}', {"X-Signature": "sig"}, 1024)
        assert (answer.status, answer.head) == (201, b'{"a":1}')
        again = await post.post(f"{base}/echo", b"x" * 5000, {"X-Signature": "s"}, 100)
        assert (again.status, again.head) == (201, b"x" * 100)  # at most the read limit

    run(adapter, scenario)


def test_a_redirect_is_returned_not_followed(adapter: str) -> None:
    async def scenario(post: HttpPost, base: str) -> None:
        answer = await post.post(f"{base}/redirect", b"{}", {}, 1024)
        assert answer.status == 302

    run(adapter, scenario)


def test_a_large_error_body_is_cut_at_the_limit_and_the_client_stays_usable(adapter: str) -> None:
    async def scenario(post: HttpPost, base: str) -> None:
        for _ in range(3):
            answer = await post.post(f"{base}/error", b"{}", {}, 512)
            assert (answer.status, answer.head) == (503, b"e" * 512)
        ok = await post.post(f"{base}/echo", b"{}", {"X-Signature": "s"}, 512)
        assert ok.status == 201

    run(adapter, scenario)


def test_no_answer_within_the_timeout_raises_post_timeout(adapter: str) -> None:
    async def scenario(post: HttpPost, base: str) -> None:
        with pytest.raises(PostTimeout):
            await post.post(f"{base}/slow", b"{}", {}, 512)

    run(adapter, scenario)


def test_a_refused_connection_raises_post_failed(adapter: str) -> None:
    async def scenario(post: HttpPost, base: str) -> None:
        with pytest.raises(PostFailed):
            await post.post("http://127.0.0.1:1/", b"{}", {}, 512)

    run(adapter, scenario)
