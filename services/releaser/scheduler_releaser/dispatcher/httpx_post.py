"""`HttpxPost`: the HTTP POST port (http_post.py) over an httpx client.

Not the production adapter (http_post.py says why): unit tests drive it with httpx's
MockTransport, and it passes the same contract tests as `AiohttpPost`. A module of its own so
that the dispatcher does not import httpx at start (about 0.2 s).
"""

from __future__ import annotations

import httpx

from .http_post import HttpAnswer, PostFailed, PostTimeout


class HttpxPost:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        read_limit: int,
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        timeout = httpx.Timeout(timeout_s) if timeout_s is not None else httpx.USE_CLIENT_DEFAULT
        try:
            async with self._client.stream(
                "POST", url, content=body, headers=headers, follow_redirects=False, timeout=timeout
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= read_limit:
                        break
                return HttpAnswer(response.status_code, b"".join(chunks)[:read_limit])
        except httpx.TimeoutException as exc:
            raise PostTimeout(repr(exc)) from exc
        except httpx.TransportError as exc:
            raise PostFailed(repr(exc)) from exc

    async def close(self) -> None:
        await self._client.aclose()
