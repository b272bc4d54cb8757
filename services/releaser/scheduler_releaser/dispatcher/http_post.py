"""The HTTP POST of a REST delivery, behind a small port.

`AiohttpPost` is the production adapter. It replaced an httpx client: httpcore's pool checks
every idle connection's socket (a poll and a getpeername system call each) on every request, so
at a few hundred deliveries per second the dispatcher spent most of its CPU in the pool and fell
behind (bench/dispatch_bench.py --destination rest --rate 300: p50 lateness 0.8 s on a quiet
machine, 9 s on a loaded one; see services/releaser/README.md). aiohttp is a runtime dependency
of its own. `HttpxPost` (httpx_post.py: httpx is not imported by the service) adapts an httpx
client, which unit tests drive with a MockTransport; both pass the same contract tests against a
real local server (tests/contract/test_http_post.py).

Contract: POST `body` with `headers` to `url`, never following a redirect (a 3xx is returned
as the answer); return the status and at most `read_limit` bytes of the response body (a longer
body is abandoned and its connection closed, not drained); raise `PostTimeout` when no answer
came within the client's timeout and `PostFailed` when the connection failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    head: bytes  # the first bytes of the body, at most the read limit


class PostTimeout(Exception):
    pass


class PostFailed(Exception):
    pass


class HttpPost(Protocol):
    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        read_limit: int,
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        """`timeout_s`: this request's total timeout (an app's policy), None: the client's."""
        ...

    async def close(self) -> None: ...


USER_AGENT = "scheduler-dispatcher"


class AiohttpPost:
    def __init__(self, max_connections: int, timeout_s: float) -> None:
        """Call on the event loop that will use it (aiohttp binds its session to that loop)."""
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,  # fairness between apps is the deliverer's per-app semaphores
            ttl_dns_cache=10,
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
            trust_env=False,
        )

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        read_limit: int,
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        # (aiohttp reads timeout=None as "no timeout": the session's is passed instead)
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                head = await _read_head(response.content, read_limit)
                if not response.content.at_eof():
                    response.close()  # not worth draining: drop this connection
                return HttpAnswer(response.status, head)
        except TimeoutError as exc:  # aiohttp's timeouts derive from it
            raise PostTimeout(repr(exc)) from exc
        except aiohttp.ClientError as exc:
            raise PostFailed(repr(exc)) from exc

    async def close(self) -> None:
        await self._session.close()


async def _read_head(stream: aiohttp.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
