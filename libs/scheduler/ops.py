"""The ops endpoints of the worker services: /metrics, /healthz (liveness), /readyz (readiness).

The main loop calls `Health.beat()` every iteration; a loop that stopped beating for longer than
`stale_after_ms` is reported not alive, so an orchestrator restarts a stuck process. Readiness is
set by the service (connected, assigned, caught up) with a reason operators can read.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from scheduler.clock import Clock


class Health:
    def __init__(self, clock: Clock, stale_after_ms: int = 30_000) -> None:
        self._clock = clock
        self._stale_after_ms = stale_after_ms
        self._last_beat = clock.monotonic_ms()
        self._ready = False
        self._reason = "starting"
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock.monotonic_ms()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self._ready, self._reason = ready, reason or ("ready" if ready else "not ready")

    def alive(self) -> tuple[bool, str]:
        with self._lock:
            idle = self._clock.monotonic_ms() - self._last_beat
        if idle > self._stale_after_ms:
            return False, f"main loop silent for {idle:.0f} ms"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        alive, why = self.alive()
        if not alive:
            return False, why
        with self._lock:
            return self._ready, self._reason


class OpsServer:
    """A small threaded HTTP server for the ops endpoints; `close()` stops it."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: Health | None
    ) -> None:
        """`health` None: /metrics only (ingest answers its probes on the API's port)."""
        handler = _handler(registry, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ops-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(registry: CollectorRegistry, health: Health | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif health is not None and path in ("/healthz", "/readyz"):
                ok, reason = health.alive() if path == "/healthz" else health.ready()
                body = json.dumps({"status": "ok" if ok else "unavailable", "reason": reason})
                self._send(200 if ok else 503, body.encode(), "application/json")
            else:
                body = json.dumps({"error": "not_found", "message": f"no route {path}"})
                self._send(404, body.encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes and probes are not worth a log line each."""

    return Handler
