"""A TCP proxy in front of one server (Cassandra, in the tests) that a test can cut or slow down
for the clients that connect through it, without touching the shared server.

- `cut()` drops every open connection and refuses new ones until `restore()`.
- `delay(seconds)` holds every chunk flowing from the client to the server until it has been in
  the proxy for `seconds`, then forwards it (in order); replies flow back at once, so every
  request/response round trip takes `seconds` longer. `delay(seconds, replies=True)` holds the
  server-to-client direction as well. The delay applies to chunks already held: `undelay()`
  releases everything held at once, and a longer `delay()` holds them longer. Connections stay
  open throughout (a slow network, not an outage).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque

CHUNK_BYTES = 65536


class CuttableProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0) -> None:
        """Listens on 127.0.0.1:`listen_port` (0: a free port, in `port`)."""
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port: int = self._listener.getsockname()[1]
        self._up = True
        self._closed = False
        self._delay_s = 0.0
        self._delay_replies = False
        self._sockets: list[socket.socket] = []
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                client.close()  # unreachable: refuse by closing at once
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            links = [_Link(self, client, server, request=True), _Link(self, server, client)]
            with self._lock:
                self._sockets += [client, server]
                self._links = [link for link in self._links if not link.done] + links
            for link in links:
                link.start()

    def held_s(self, request: bool) -> float:
        """How long a chunk in this direction is held, as of now."""
        return self._delay_s if request or self._delay_replies else 0.0

    def delay(self, seconds: float, *, replies: bool = False) -> None:
        """Hold client-to-server chunks (and server-to-client ones with `replies`) `seconds`."""
        self._delay_s, self._delay_replies = seconds, replies
        self._wake()

    def undelay(self) -> None:
        """Forward at once again, everything held included."""
        self._delay_s, self._delay_replies = 0.0, False
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.wake()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `restore()`."""
        self._up = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
            links, self._links = self._links, []
        for s in sockets:
            _close(s)
        for link in links:
            link.stop()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


class _Link:
    """One direction of one proxied connection: a reader queues each chunk with its arrival
    time, a writer forwards it once it has been held as long as the proxy says."""

    def __init__(
        self,
        proxy: CuttableProxy,
        source: socket.socket,
        target: socket.socket,
        request: bool = False,
    ) -> None:
        self._proxy = proxy
        self._source = source
        self._target = target
        self._request = request
        self._chunks: deque[tuple[float, bytes]] = deque()  # b"": end of stream
        self._cond = threading.Condition()
        self.done = False

    def start(self) -> None:
        for run in (self._read, self._write):
            threading.Thread(target=run, name="proxy-link", daemon=True).start()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def _read(self) -> None:
        while True:
            try:
                data = self._source.recv(CHUNK_BYTES)
            except OSError:
                data = b""
            with self._cond:
                self._chunks.append((time.monotonic(), data))
                self._cond.notify_all()
            if not data:
                return

    def _next(self) -> bytes | None:
        """The next chunk once it is due; None once the link is stopped."""
        with self._cond:
            while not self.done:
                if not self._chunks:
                    self._cond.wait()
                    continue
                arrived, data = self._chunks[0]
                wait_s = arrived + self._proxy.held_s(self._request) - time.monotonic()
                if wait_s <= 0:
                    self._chunks.popleft()
                    return data
                self._cond.wait(wait_s)
            return None

    def _write(self) -> None:
        try:
            while data := self._next():
                self._target.sendall(data)
        except OSError:
            pass
        finally:
            self.stop()
            # end of stream or an error either way: the connection is over in both directions
            _close(self._source)
            _close(self._target)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
