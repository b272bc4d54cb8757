"""The test proxy (scheduler.testing.proxy) against a local echo server: transparent by
default, delay() holds requests (and replies, if asked) for the given time, undelay() releases
what is held at once, cut()/restore() refuse and accept connections again."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from scheduler.testing.proxy import CuttableProxy
from tests.support.echo import echo_server

pytestmark = [pytest.mark.integration]

TIMEOUT_S = 5.0


@pytest.fixture
def echo() -> Iterator[int]:
    """A local echo server: every connection gets its bytes back."""
    listener = echo_server()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy("127.0.0.1", echo)
    yield proxy
    proxy.close()


def connect(proxy: CuttableProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S)


def round_trip(conn: socket.socket, data: bytes) -> float:
    """Send, read the echo back in full; returns the seconds it took."""
    started = time.monotonic()
    conn.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = conn.recv(65536)
        assert chunk, "connection closed"
        received += chunk
    assert received == data
    return time.monotonic() - started


def closed(conn: socket.socket) -> bool:
    """The proxy closed the connection (end of stream or a reset)."""
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True


def test_transparent_then_delayed_then_released(proxy: CuttableProxy) -> None:
    with connect(proxy) as conn:
        assert round_trip(conn, b"hello") < 0.3
        big = bytes(range(256)) * 1_000  # several chunks, order kept
        assert round_trip(conn, big) < 1.0

        proxy.delay(0.5)
        assert 0.45 <= round_trip(conn, b"slow") < 1.5
        assert 0.45 <= round_trip(conn, big) < 2.0

        # replies too: two hops held
        proxy.delay(0.3, replies=True)
        assert 0.55 <= round_trip(conn, b"both") < 1.5

        # held chunks go at once on undelay()
        proxy.delay(30)
        conn.sendall(b"held")
        time.sleep(0.3)
        proxy.undelay()
        started = time.monotonic()
        assert conn.recv(100) == b"held"
        assert time.monotonic() - started < 1.0
        assert round_trip(conn, b"fast") < 0.3


def test_delay_applies_to_new_connections_and_cut_still_works(proxy: CuttableProxy) -> None:
    proxy.delay(0.4)
    with connect(proxy) as conn:
        assert 0.35 <= round_trip(conn, b"x") < 1.5
        proxy.cut()
        with contextlib.suppress(OSError):
            conn.sendall(b"after the cut")
        assert closed(conn)  # dropped
    with connect(proxy) as refused:
        assert closed(refused)  # refused: closed at once
    proxy.restore()
    proxy.undelay()
    with connect(proxy) as conn:
        assert round_trip(conn, b"back") < 0.3
