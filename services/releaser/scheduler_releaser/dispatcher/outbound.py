"""Outbound guard: REST endpoints must resolve to public addresses (SSRF protection).

Every address the host resolves to is checked; private, loopback, link-local, multicast,
reserved and unspecified ones are refused unless the operator allows them (tests, local demo).
Residual risk, documented: DNS may answer differently at connect time (rebinding); run the
dispatcher behind an egress policy in production as well.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

Resolver = Callable[[str, int], Awaitable[list[str]]]


class RefusedDestination(Exception):
    """The endpoint is not an http(s) URL or resolves to a non-public address: do not retry."""


class UnresolvedDestination(Exception):
    """Name resolution failed (possibly transient): retry."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class OutboundGuard:
    def __init__(self, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self._allow_private = allow_private
        self._resolve = resolver

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedDestination(f"not an http(s) URL: {url!r}")
        if self._allow_private:
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self._resolve(parts.hostname, port)
        except OSError as exc:
            raise UnresolvedDestination(f"cannot resolve {parts.hostname}: {exc}") from exc
        if not addresses:
            raise UnresolvedDestination(f"{parts.hostname} resolves to nothing")
        for address in addresses:
            if not is_public(address):
                raise RefusedDestination(
                    f"{parts.hostname} resolves to non-public address {address}"
                )
