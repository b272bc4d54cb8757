"""A local TCP echo server for proxy tests: every connection gets its bytes back."""

from __future__ import annotations

import contextlib
import socket
import threading


def echo_server(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Listening on host:port (0: a free port); close() the returned socket to stop it."""
    listener = socket.create_server((host, port))

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener
